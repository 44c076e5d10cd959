//! Process stdio in Kata's pull model (WriteStdin, ReadStdout, ReadStderr,
//! CloseStdin, TtyWinResize): decode, call [`crate::container`].

use super::containers::to_status;
use crate::container::stdio::Stream;
use crate::methods::proto::agent::{
    CloseStdinRequest, ReadStreamRequest, ReadStreamResponse, TtyWinResizeRequest,
    WriteStreamRequest, WriteStreamResponse,
};
use crate::methods::proto::empty::Empty;
use crate::state::AgentState;

/// WriteStdin (empty data closes stdin).
pub(crate) async fn write_stdin(
    state: &AgentState,
    req: WriteStreamRequest,
) -> ttrpc::Result<WriteStreamResponse> {
    let n = state
        .containers
        .write_stdin(&req.container_id, &req.exec_id, &req.data)
        .await
        .map_err(to_status)?;
    let mut resp = WriteStreamResponse::new();
    resp.len = u32::try_from(n).unwrap_or(u32::MAX);
    Ok(resp)
}

async fn read(
    state: &AgentState,
    req: ReadStreamRequest,
    stream: Stream,
) -> ttrpc::Result<ReadStreamResponse> {
    let data = state
        .containers
        .read(&req.container_id, &req.exec_id, stream, req.len)
        .await
        .map_err(to_status)?;
    let mut resp = ReadStreamResponse::new();
    resp.data = data;
    Ok(resp)
}

/// ReadStdout: up to `len` bytes; empty = EOF.
pub(crate) async fn read_stdout(
    state: &AgentState,
    req: ReadStreamRequest,
) -> ttrpc::Result<ReadStreamResponse> {
    read(state, req, Stream::Stdout).await
}

/// ReadStderr: up to `len` bytes; empty = EOF.
pub(crate) async fn read_stderr(
    state: &AgentState,
    req: ReadStreamRequest,
) -> ttrpc::Result<ReadStreamResponse> {
    read(state, req, Stream::Stderr).await
}

/// CloseStdin.
pub(crate) async fn close_stdin(
    state: &AgentState,
    req: CloseStdinRequest,
) -> ttrpc::Result<Empty> {
    state
        .containers
        .close_stdin(&req.container_id, &req.exec_id)
        .await
        .map_err(to_status)?;
    Ok(Empty::new())
}

/// TtyWinResize.
pub(crate) async fn tty_win_resize(
    state: &AgentState,
    req: TtyWinResizeRequest,
) -> ttrpc::Result<Empty> {
    state
        .containers
        .resize(&req.container_id, &req.exec_id, req.row, req.column)
        .map_err(to_status)?;
    Ok(Empty::new())
}
