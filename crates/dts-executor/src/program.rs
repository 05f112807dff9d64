//! What a task's rendered template runs as, decided once per shard.
//!
//! A template is normally a script for an interpreter (`bash -c <script>
//! dts-item <item>`, or what [`Convention`] says for python, perl, ruby and
//! node). For seed compatibility, a template that is one word
//! naming an executable file runs that file directly with the item as its
//! only argument. The worker calls [`Program::prepare`] (or
//! [`crate::Executor::prepare`]) when a shard starts and reuses the result for
//! every item.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// How a task's rendered script is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// An executable run as `<path> <item>` (the seed's behaviour).
    Direct(PathBuf),
    /// A script run by its interpreter with the item where that
    /// interpreter's users look for an argument ([`Convention`]): for a shell
    /// `<interpreter> -c <script> dts-item <item>`, so the item is `$1`.
    Script {
        /// The interpreter, looked up in the scripts' `PATH` unless it has a `/`.
        interpreter: String,
        /// The rendered template, passed verbatim.
        script: String,
    },
}

impl Program {
    /// Decides how `script` runs. It is [`Program::Direct`] when the trimmed
    /// script is a single word naming an executable regular file: a word with
    /// a `/` is a path (relative to the current directory), a bare word is
    /// looked up in `path_var`, the `PATH` the scripts get (empty entries are
    /// skipped). Anything else is a [`Program::Script`] for `interpreter`.
    ///
    /// This makes a few `stat` calls; call it once per shard, not per item.
    pub fn prepare(script: &str, interpreter: &str, path_var: Option<&OsStr>) -> Program {
        Self::prepare_in(script, interpreter, path_var, None)
    }

    /// [`Program::prepare`] with relative paths resolved against `workdir`,
    /// the directory the child will run in.
    pub(crate) fn prepare_in(
        script: &str,
        interpreter: &str,
        path_var: Option<&OsStr>,
        workdir: Option<&Path>,
    ) -> Program {
        match direct_executable(script.trim(), path_var, workdir) {
            Some(path) => Program::Direct(path),
            None => Program::Script {
                interpreter: resolve_interpreter(interpreter, path_var),
                script: script.to_owned(),
            },
        }
    }

    /// The program's name for messages: the path or the interpreter.
    pub fn display_name(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Program::Direct(path) => path.to_string_lossy(),
            Program::Script { interpreter, .. } => interpreter.as_str().into(),
        }
    }
}

/// How a script and its item are put on an interpreter's command line, so
/// that the item is where that language's users look for an argument: the
/// shell convention (`-c <script> <$0> <item>`) would give python
/// `sys.argv[1] == "dts-item"`, and perl's `-c` only checks the syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convention {
    /// `-c <script> dts-item <item>`: the item is `$1`, `$0` is `dts-item`.
    /// Shells, and every interpreter dts does not know.
    Shell,
    /// `-c <script> <item>`: `sys.argv` is `["-c", item]`. Python's `-c`
    /// ends its options, so an item starting with `-` needs no `--` (one
    /// would reach `sys.argv`).
    Python,
    /// `-e <script> -- <item>`: perl's `$ARGV[0]`, ruby's `ARGV[0]`, node's
    /// `process.argv[1]`. These go on reading options after `-e`, so the
    /// `--` (which they drop) keeps an item like `-n` from being one.
    Eval,
}

impl Convention {
    /// The convention of `interpreter`, known by its file name (a path's last
    /// part) without a trailing version of digits and dots, so
    /// `/usr/bin/python3.11` is python and `perl5.36.0` is perl.
    pub fn of(interpreter: &str) -> Convention {
        let name = interpreter.rsplit('/').next().unwrap_or(interpreter);
        match name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.') {
            "python" | "pypy" => Convention::Python,
            "perl" | "ruby" | "node" | "nodejs" => Convention::Eval,
            _ => Convention::Shell,
        }
    }

    /// What goes between the interpreter and the item on the command line.
    pub fn args(self, script: &str) -> Vec<&str> {
        match self {
            Convention::Shell => vec!["-c", script, SCRIPT_NAME],
            Convention::Python => vec!["-c", script],
            Convention::Eval => vec!["-e", script, "--"],
        }
    }
}

/// `$0` of shell scripts, so that `$1` is the item.
pub(crate) const SCRIPT_NAME: &str = "dts-item";

/// The interpreter as an absolute path when the scripts' `PATH` has it.
///
/// This is about speed: a bare name like `bash` is looked up by the child
/// for every item, as `execvp` does, with a failed `execve` for each `PATH`
/// directory before the right one (and, when `std` still spawned items, it
/// made `std::process::Command` fork the whole worker instead of using
/// `posix_spawn`). An unknown name stays as given, so spawning fails with a
/// message naming it.
fn resolve_interpreter(interpreter: &str, path_var: Option<&OsStr>) -> String {
    if interpreter.contains('/') {
        return interpreter.to_owned();
    }
    find_in_path(interpreter, path_var)
        .and_then(|path| path.into_os_string().into_string().ok())
        .unwrap_or_else(|| interpreter.to_owned())
}

/// The first executable file called `word` in `path_var`'s directories.
fn find_in_path(word: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path_var?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(word))
        .find(|candidate| is_executable_file(candidate))
}

/// The executable `word` names, if it is a single word that names one.
fn direct_executable(
    word: &str,
    path_var: Option<&OsStr>,
    workdir: Option<&Path>,
) -> Option<PathBuf> {
    if word.is_empty() || word.contains(char::is_whitespace) {
        return None;
    }
    if word.contains('/') {
        let path = Path::new(word);
        // The child resolves a relative path against its own working directory.
        let probe = match workdir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        };
        return is_executable_file(&probe).then(|| path.to_path_buf());
    }
    find_in_path(word, path_var)
}

/// A regular file (after following symlinks) with an execute bit set.
fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    /// A directory with an executable `tool`, a non-executable `data` and a
    /// sub-directory `dir`.
    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            dir.path().join("tool"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(dir.path().join("data"), "x").unwrap();
        std::fs::create_dir(dir.path().join("dir")).unwrap();
        dir
    }

    fn script(text: &str) -> Program {
        Program::Script {
            interpreter: "bash".into(),
            script: text.into(),
        }
    }

    #[test]
    fn the_interpreter_is_resolved_to_an_absolute_path_once() {
        // A bare name would be looked up for every spawn (see
        // `resolve_interpreter`); an unknown one stays as given.
        let dir = fixture();
        let path: OsString = dir.path().as_os_str().to_owned();
        let tool = dir.path().join("tool").display().to_string();
        assert_eq!(
            Program::prepare("echo hi", "tool", Some(&path)),
            Program::Script {
                interpreter: tool,
                script: "echo hi".into()
            }
        );
        assert_eq!(
            Program::prepare("echo hi", "no-such-shell", Some(&path)),
            Program::Script {
                interpreter: "no-such-shell".into(),
                script: "echo hi".into()
            }
        );
        assert_eq!(
            Program::prepare("echo hi", "/bin/sh", Some(&path)),
            Program::Script {
                interpreter: "/bin/sh".into(),
                script: "echo hi".into()
            }
        );
    }

    #[test]
    fn a_script_with_several_words_is_run_by_the_interpreter() {
        let dir = fixture();
        let tool = dir.path().join("tool");
        let text = format!("{} --flag", tool.display());
        assert_eq!(Program::prepare(&text, "bash", None), script(&text));
        assert_eq!(Program::prepare("echo hi", "bash", None), script("echo hi"));
    }

    #[test]
    fn a_single_word_path_to_an_executable_is_run_directly() {
        let dir = fixture();
        let tool = dir.path().join("tool");
        let text = format!("  {}\n", tool.display());
        assert_eq!(Program::prepare(&text, "bash", None), Program::Direct(tool));
    }

    #[test]
    fn a_bare_word_is_looked_up_in_the_scripts_path() {
        let dir = fixture();
        let path: OsString =
            std::env::join_paths(["/nonexistent-dts", dir.path().to_str().unwrap()]).unwrap();
        assert_eq!(
            Program::prepare("tool", "bash", Some(&path)),
            Program::Direct(dir.path().join("tool"))
        );
    }

    #[test]
    fn a_bare_word_is_a_script_when_no_path_has_it() {
        let dir = fixture();
        let path = dir.path().as_os_str();
        assert_eq!(
            Program::prepare("missing", "bash", Some(path)),
            script("missing")
        );
        assert_eq!(Program::prepare("tool", "bash", None), script("tool"));
    }

    #[test]
    fn a_bare_word_is_not_found_through_an_empty_path_entry() {
        let dir = fixture();
        let path = OsString::from(":/nonexistent-dts");
        let inside = Program::prepare_in("tool", "bash", Some(&path), Some(dir.path()));
        assert_eq!(inside, script("tool"));
    }

    #[test]
    fn a_file_without_execute_permission_is_a_script() {
        let dir = fixture();
        let data = dir.path().join("data").display().to_string();
        assert_eq!(Program::prepare(&data, "bash", None), script(&data));
    }

    #[test]
    fn a_directory_is_a_script() {
        let dir = fixture();
        let sub = dir.path().join("dir").display().to_string();
        assert_eq!(Program::prepare(&sub, "bash", None), script(&sub));
    }

    #[test]
    fn an_empty_template_is_a_script() {
        assert_eq!(
            Program::prepare("  ", "sh", None),
            Program::Script {
                interpreter: "sh".into(),
                script: "  ".into()
            }
        );
    }

    #[test]
    fn a_relative_path_is_checked_against_the_childs_working_directory() {
        let dir = fixture();
        assert_eq!(
            Program::prepare_in("./tool", "bash", None, Some(dir.path())),
            Program::Direct(PathBuf::from("./tool"))
        );
        let elsewhere = tempfile::tempdir().unwrap();
        assert_eq!(
            Program::prepare_in("./tool", "bash", None, Some(elsewhere.path())),
            script("./tool")
        );
    }

    /// The command line of `item` run by `interpreter`, after the interpreter.
    fn argv<'a>(interpreter: &str, script: &'a str, item: &'a str) -> Vec<&'a str> {
        let mut argv = Convention::of(interpreter).args(script);
        argv.push(item);
        argv
    }

    #[test]
    fn shells_get_the_item_as_dollar_one_after_dts_item() {
        for shell in [
            "bash",
            "sh",
            "dash",
            "zsh",
            "ksh",
            "/bin/sh",
            "/usr/bin/zsh",
        ] {
            assert_eq!(
                argv(shell, "echo \"$1\"", "-n x"),
                ["-c", "echo \"$1\"", "dts-item", "-n x"],
                "{shell}"
            );
        }
    }

    #[test]
    fn python_gets_the_item_as_sys_argv_1_without_a_double_dash() {
        for python in [
            "python3",
            "python",
            "python3.11",
            "/usr/bin/python3",
            "pypy3",
        ] {
            assert_eq!(
                argv(python, "import sys", "-n x"),
                ["-c", "import sys", "-n x"],
                "{python}"
            );
        }
    }

    #[test]
    fn perl_ruby_and_node_get_the_item_after_e_and_a_double_dash() {
        for name in [
            "perl",
            "perl5.36.0",
            "/usr/bin/perl",
            "ruby",
            "ruby3.1",
            "node",
            "nodejs",
            "/usr/local/bin/node",
        ] {
            assert_eq!(
                argv(name, "print 1", "-n x"),
                ["-e", "print 1", "--", "-n x"],
                "{name}"
            );
        }
    }

    #[test]
    fn an_unknown_interpreter_gets_the_shell_convention() {
        // Only the file name counts, and only a version may follow it.
        for name in [
            "fish",
            "python3-config",
            "rubyx",
            "/opt/python/bin/tool",
            "/usr/lib/node/sh",
            "3.11",
            "",
        ] {
            assert_eq!(Convention::of(name), Convention::Shell, "{name}");
        }
        assert_eq!(argv("fish", "s", "i"), ["-c", "s", "dts-item", "i"]);
    }

    #[test]
    fn the_display_name_is_the_path_or_the_interpreter() {
        assert_eq!(
            Program::Direct("/bin/true".into()).display_name(),
            "/bin/true"
        );
        assert_eq!(script("x").display_name(), "bash");
    }
}
