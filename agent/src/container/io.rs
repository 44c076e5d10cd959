//! WriteStdin, ReadStdout/ReadStderr, CloseStdin, TtyWinResize.

use super::stdio::Stream;
use super::{ContainerError, Containers};

impl Containers {
    /// Up to `len` bytes of `stream` of `exec_id` in `cid`; empty = EOF.
    pub async fn read(
        &self,
        cid: &str,
        exec_id: &str,
        stream: Stream,
        len: u32,
    ) -> Result<Vec<u8>, ContainerError> {
        let p = self.get(cid)?.process(exec_id)?;
        p.io.read(stream, len as usize, p.exit.clone())
            .await
            .map_err(ContainerError::io(format!("reading {stream:?} of {cid}")))
    }

    /// Writes to stdin (empty data closes it); returns the bytes written.
    pub async fn write_stdin(
        &self,
        cid: &str,
        exec_id: &str,
        data: &[u8],
    ) -> Result<usize, ContainerError> {
        let p = self.get(cid)?.process(exec_id)?;
        p.io.write_stdin(data)
            .await
            .map_err(ContainerError::io(format!("writing to the stdin of {cid}")))
    }

    /// Closes stdin.
    pub async fn close_stdin(&self, cid: &str, exec_id: &str) -> Result<(), ContainerError> {
        let p = self.get(cid)?.process(exec_id)?;
        p.io.close_stdin()
            .await
            .map_err(ContainerError::io(format!("closing the stdin of {cid}")))
    }

    /// Resizes the terminal of `exec_id`.
    pub fn resize(
        &self,
        cid: &str,
        exec_id: &str,
        rows: u32,
        cols: u32,
    ) -> Result<(), ContainerError> {
        let p = self.get(cid)?.process(exec_id)?;
        let (rows, cols) = (
            u16::try_from(rows)
                .map_err(|_| ContainerError::InvalidArgument(format!("row {rows} is too large")))?,
            u16::try_from(cols).map_err(|_| {
                ContainerError::InvalidArgument(format!("column {cols} is too large"))
            })?,
        );
        p.io.resize(rows, cols).map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidInput {
                ContainerError::FailedPrecondition(format!("{cid}/{exec_id}: {e}"))
            } else {
                ContainerError::Io {
                    what: format!("resizing the terminal of {cid}"),
                    source: e,
                }
            }
        })
    }
}
