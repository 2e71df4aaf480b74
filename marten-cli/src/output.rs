//! Writing a command's output without panicking: [`Out`] writes whole lines to standard
//! output and flushes each, treats a closed pipe (a reader that went away, as in
//! `app schema dump | head -1`) as the end of the output rather than of the command,
//! and reports any other failure as [`CliError::Output`]; [`note`] writes a line to
//! standard error, best effort. (`print!` and `eprintln!` panic when they cannot write.)

use std::fmt;
use std::io::{self, Write};

use crate::CliError;

/// A command's output: standard output, or in tests any writer.
pub(crate) struct Out<W: Write = io::Stdout> {
    writer: W,
    /// The reader went away (a write met a broken pipe): nothing more is written.
    closed: bool,
}

impl Out {
    /// Standard output. Each write takes its lock for the whole text (`Stdout`'s
    /// `write_fmt` does), so lines from several tasks never interleave.
    pub(crate) fn stdout() -> Out {
        Out::new(io::stdout())
    }
}

impl<W: Write> Out<W> {
    /// Output to `writer`.
    pub(crate) fn new(writer: W) -> Out<W> {
        Out {
            writer,
            closed: false,
        }
    }

    /// Writes `text` and a newline.
    pub(crate) fn line(&mut self, text: impl fmt::Display) -> Result<(), CliError> {
        self.write(format_args!("{text}\n"))
    }

    /// Writes `text` as it is (a script that ends with its own newline).
    pub(crate) fn text(&mut self, text: &str) -> Result<(), CliError> {
        self.write(format_args!("{text}"))
    }

    /// Whether the reader went away: later writes are skipped.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Writes and flushes `args`. A broken pipe closes the output (and is no error);
    /// any other failure is [`CliError::Output`].
    fn write(&mut self, args: fmt::Arguments<'_>) -> Result<(), CliError> {
        if self.closed {
            return Ok(());
        }
        match self
            .writer
            .write_fmt(args)
            .and_then(|()| self.writer.flush())
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(CliError::Output(e)),
        }
    }
}

/// Writes `text` and a newline to standard error; a failure is ignored (there is nowhere
/// left to report it).
pub(crate) fn note(text: impl fmt::Display) {
    let _ = writeln!(io::stderr().lock(), "{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that fails every write and flush with `kind`, counting the attempts.
    struct Failing {
        kind: io::ErrorKind,
        attempts: usize,
    }

    impl Write for Failing {
        fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
            self.attempts += 1;
            Err(io::Error::from(self.kind))
        }

        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from(self.kind))
        }
    }

    #[test]
    fn lines_are_written_and_flushed_whole() {
        let mut out = Out::new(Vec::new());
        out.line("one").expect("write");
        out.text("two\nthree\n").expect("write");
        out.line(format_args!("{}-{}", 4, 5)).expect("write");
        assert!(!out.is_closed());
        assert_eq!(out.writer, b"one\ntwo\nthree\n4-5\n");
    }

    #[test]
    fn a_broken_pipe_ends_the_output_not_the_command() {
        let mut out = Out::new(Failing {
            kind: io::ErrorKind::BrokenPipe,
            attempts: 0,
        });
        assert!(out.line("first").is_ok());
        assert!(out.is_closed());
        assert!(out.text("second").is_ok());
        assert!(out.line("third").is_ok());
        // Nothing is tried once the reader has gone.
        assert_eq!(out.writer.attempts, 1);
    }

    #[test]
    fn any_other_failure_is_an_output_error() {
        for kind in [
            io::ErrorKind::PermissionDenied,
            io::ErrorKind::StorageFull,
            io::ErrorKind::Other,
        ] {
            let mut out = Out::new(Failing { kind, attempts: 0 });
            match out.line("x") {
                Err(CliError::Output(e)) => assert_eq!(e.kind(), kind),
                other => panic!("{kind:?}: {other:?}"),
            }
            assert!(!out.is_closed(), "{kind:?}");
        }
    }
}
