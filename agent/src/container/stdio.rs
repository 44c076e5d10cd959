//! A process's standard streams on the agent side, with the Kata pull
//! model: the host calls `ReadStdout`/`ReadStderr` with a length and gets up
//! to that many bytes, an empty answer meaning EOF; `WriteStdin` writes,
//! empty data or `CloseStdin` closes. Pipes by default; with a terminal, one
//! PTY master (received from the runtime over a console socket) carries
//! both directions.
//!
//! After the process exits, reads drain what is buffered for at most
//! [`DRAIN_AFTER_EXIT`] and then report EOF, even if a leftover child still
//! holds the pipe open (Kata does the same).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{watch, Mutex};

use super::reaper::ExitStatus;
use super::runtime::StdioFds;

/// How long reads may still return data after the process exited.
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);
/// Largest read answered at once (ttrpc frames are at most 4 MiB).
pub const MAX_READ: usize = 1024 * 1024;

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output (or the terminal).
    Stdout,
    /// Standard error (nothing with a terminal).
    Stderr,
}

#[derive(Debug)]
enum Output {
    Pipe(pipe::Receiver),
    Tty(Arc<AsyncFd<OwnedFd>>),
    /// Stderr of a terminal process: EOF once the process exits.
    None,
}

#[derive(Debug)]
enum Input {
    Pipe(pipe::Sender),
    Tty(Arc<AsyncFd<OwnedFd>>),
}

/// The agent's ends of a process's streams.
#[derive(Debug)]
pub struct ProcessIo {
    stdin: Mutex<Option<Input>>,
    stdout: Mutex<Output>,
    stderr: Mutex<Output>,
    tty: Option<Arc<AsyncFd<OwnedFd>>>,
}

fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    Ok((r, w))
}

impl ProcessIo {
    /// Pipes for stdin (if wanted), stdout and stderr: the agent's ends and
    /// the process's ends.
    pub fn pipes(with_stdin: bool) -> io::Result<(ProcessIo, StdioFds)> {
        let (out_r, out_w) = pipe_pair()?;
        let (err_r, err_w) = pipe_pair()?;
        let (stdin, child_stdin) = if with_stdin {
            let (in_r, in_w) = pipe_pair()?;
            (
                Some(Input::Pipe(pipe::Sender::from_owned_fd(in_w)?)),
                Some(in_r),
            )
        } else {
            (None, None)
        };
        Ok((
            ProcessIo {
                stdin: Mutex::new(stdin),
                stdout: Mutex::new(Output::Pipe(pipe::Receiver::from_owned_fd(out_r)?)),
                stderr: Mutex::new(Output::Pipe(pipe::Receiver::from_owned_fd(err_r)?)),
                tty: None,
            },
            StdioFds {
                stdin: child_stdin,
                stdout: Some(out_w),
                stderr: Some(err_w),
                console_socket: None,
            },
        ))
    }

    /// Streams over a PTY master.
    pub fn tty(master: OwnedFd) -> io::Result<ProcessIo> {
        rustix::io::ioctl_fionbio(&master, true)?;
        // SAFETY: `master` is an open, owned descriptor that moves into the
        // AsyncFd and is closed only when the AsyncFd drops; OwnedFd's
        // as_raw_fd always returns that same descriptor.
        let fd = unsafe { AsyncFd::register(master) }.map_err(io::Error::from)?;
        let fd = Arc::new(fd);
        Ok(ProcessIo {
            stdin: Mutex::new(Some(Input::Tty(Arc::clone(&fd)))),
            stdout: Mutex::new(Output::Tty(Arc::clone(&fd))),
            stderr: Mutex::new(Output::None),
            tty: Some(fd),
        })
    }

    /// Reads up to `len` bytes of `stream`; empty = EOF. Once `exit` holds
    /// a status, gives up after [`DRAIN_AFTER_EXIT`].
    pub async fn read(
        &self,
        stream: Stream,
        len: usize,
        mut exit: watch::Receiver<Option<ExitStatus>>,
    ) -> io::Result<Vec<u8>> {
        let len = len.clamp(1, MAX_READ);
        let mut out = match stream {
            Stream::Stdout => self.stdout.lock().await,
            Stream::Stderr => self.stderr.lock().await,
        };
        let mut buf = vec![0u8; len];
        let deadline = async {
            let _ = exit.wait_for(Option::is_some).await;
            tokio::time::sleep(DRAIN_AFTER_EXIT).await;
        };
        let n = tokio::select! {
            r = read_output(&mut out, &mut buf) => r?,
            _ = deadline => 0,
        };
        buf.truncate(n);
        Ok(buf)
    }

    /// Writes `data` to stdin; empty data closes it. Returns bytes written.
    pub async fn write_stdin(&self, data: &[u8]) -> io::Result<usize> {
        let mut stdin = self.stdin.lock().await;
        if data.is_empty() {
            *stdin = None;
            return Ok(0);
        }
        match stdin.as_mut() {
            None => Err(io::Error::new(io::ErrorKind::BrokenPipe, "stdin is closed")),
            Some(Input::Pipe(p)) => {
                p.write_all(data).await?;
                Ok(data.len())
            }
            Some(Input::Tty(fd)) => {
                let mut done = 0;
                while done < data.len() {
                    let mut guard = fd.writable().await?;
                    match guard.try_io(|f| {
                        rustix::io::write(f.get_ref(), &data[done..]).map_err(io::Error::from)
                    }) {
                        Ok(Ok(n)) => done += n,
                        Ok(Err(e)) => return Err(e),
                        Err(_would_block) => continue,
                    }
                }
                Ok(done)
            }
        }
    }

    /// Closes stdin (the process reads EOF). With a terminal, sends EOT.
    pub async fn close_stdin(&self) -> io::Result<()> {
        let mut stdin = self.stdin.lock().await;
        if let Some(Input::Tty(fd)) = stdin.as_ref() {
            let _ = rustix::io::write(fd.get_ref(), &[0x04]);
        }
        *stdin = None;
        Ok(())
    }

    /// Resizes the terminal; an error without one.
    pub fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
        let fd = self.tty.as_ref().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "the process has no terminal")
        })?;
        let ws = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(fd.get_ref(), ws).map_err(io::Error::from)
    }
}

async fn read_output(out: &mut Output, buf: &mut [u8]) -> io::Result<usize> {
    match out {
        Output::Pipe(p) => p.read(buf).await,
        Output::None => std::future::pending().await,
        Output::Tty(fd) => loop {
            let mut guard = fd.readable().await?;
            match guard
                .try_io(|f| rustix::io::read(f.get_ref(), &mut *buf).map_err(io::Error::from))
            {
                Ok(Ok(n)) => return Ok(n),
                // The slave side closed (the process and its children exited).
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        },
    }
}

/// A console socket: the runtime connects and sends the PTY master with
/// `SCM_RIGHTS`. Bind it before creating the process, then [`accept`] the
/// master while the runtime runs.
///
/// [`accept`]: ConsoleSocket::accept
#[derive(Debug)]
pub struct ConsoleSocket {
    listener: std::os::unix::net::UnixListener,
}

impl ConsoleSocket {
    /// Binds `path` (which must not exist).
    pub fn bind(path: &Path) -> io::Result<Self> {
        let listener = std::os::unix::net::UnixListener::bind(path)?;
        Ok(ConsoleSocket { listener })
    }

    /// Waits (at most `timeout`) for the runtime and receives the master.
    pub fn accept(self, timeout: Duration) -> io::Result<OwnedFd> {
        use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
        self.listener.set_nonblocking(true)?;
        let start = std::time::Instant::now();
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if start.elapsed() > timeout {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the runtime did not send the terminal",
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(timeout))?;
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut data = [0u8; 4096];
        let mut iov = [io::IoSliceMut::new(&mut data)];
        rustix::net::recvmsg(
            stream.as_fd(),
            &mut iov,
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
                if let Some(fd) = fds.next() {
                    return Ok(fd);
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the runtime sent no terminal file descriptor",
        ))
    }
}
