//! Process stdio in Kata's pull model (WriteStdin, ReadStdout, ReadStderr,
//! CloseStdin, TtyWinResize).
//!
//! Not implemented in this slice. When it is: a denied ReadStreamRequest must
//! still drain and answer empty data (Kata #10680), not an error.

super::not_implemented_yet! {
    WriteStdin write_stdin;
    ReadStdout read_stdout;
    ReadStderr read_stderr;
    CloseStdin close_stdin;
    TtyWinResize tty_win_resize;
}
