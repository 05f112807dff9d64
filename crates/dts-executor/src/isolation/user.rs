//! The user items run as (`executor.run-as`), looked up once when the
//! executor starts.
//!
//! A worker running as root runs items as an unprivileged user, so an item
//! cannot read what is private to the worker (its `/proc` entries, its
//! configuration and data files) or change anything the worker owns.

use std::ffi::{CStr, CString};
use std::path::PathBuf;

use super::SetupError;

/// A user items run as, with what the spawn needs to switch to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunAs {
    /// The name as the passwd database has it (`USER` and `LOGNAME` of items).
    pub(crate) name: String,
    pub(crate) uid: libc::uid_t,
    /// The user's primary group, which is also its only group for items.
    pub(crate) gid: libc::gid_t,
    /// The home directory from the passwd database.
    pub(crate) home: PathBuf,
}

impl RunAs {
    /// Looks `user` up: a name, or a numeric uid (which must exist too).
    pub(crate) fn lookup(user: &str) -> Result<RunAs, SetupError> {
        let not_found = || SetupError::NoSuchUser {
            user: user.to_owned(),
        };
        if let Ok(uid) = user.parse::<libc::uid_t>() {
            return passwd_by_uid(uid)?.ok_or_else(not_found);
        }
        let name = CString::new(user).map_err(|_| not_found())?;
        passwd_by_name(&name)?.ok_or_else(not_found)
    }

    /// The user this process runs as (its effective uid).
    pub(crate) fn current() -> Result<RunAs, SetupError> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        Ok(passwd_by_uid(uid)?.unwrap_or_else(|| RunAs {
            name: uid.to_string(),
            uid,
            // SAFETY: getegid has no preconditions and cannot fail.
            gid: unsafe { libc::getegid() },
            home: PathBuf::from("/"),
        }))
    }

    /// Whether this is the superuser.
    pub(crate) fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// Calls `lookup` (getpwnam_r or getpwuid_r) with a buffer that grows until
/// the entry fits.
fn passwd_with(
    what: &str,
    mut lookup: impl FnMut(&mut libc::passwd, &mut [libc::c_char], &mut *mut libc::passwd) -> i32,
) -> Result<Option<RunAs>, SetupError> {
    let mut size = 1024usize;
    loop {
        let mut buffer: Vec<libc::c_char> = vec![0; size];
        // SAFETY: passwd is a plain C struct; all-zero is a valid value that
        // the lookup overwrites.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = lookup(&mut entry, &mut buffer, &mut found);
        if rc == libc::ERANGE && size < 1 << 20 {
            size *= 4;
            continue;
        }
        if rc != 0 {
            return Err(SetupError::UserLookup {
                user: what.to_owned(),
                source: std::io::Error::from_raw_os_error(rc),
            });
        }
        if found.is_null() {
            return Ok(None);
        }
        // SAFETY: on success `entry`'s strings point into `buffer`, which is
        // alive here, and are NUL-terminated.
        let (name, home) = unsafe {
            (
                CStr::from_ptr(entry.pw_name).to_string_lossy().into_owned(),
                CStr::from_ptr(entry.pw_dir).to_string_lossy().into_owned(),
            )
        };
        return Ok(Some(RunAs {
            name,
            uid: entry.pw_uid,
            gid: entry.pw_gid,
            home: PathBuf::from(home),
        }));
    }
}

fn passwd_by_name(name: &CStr) -> Result<Option<RunAs>, SetupError> {
    passwd_with(&name.to_string_lossy(), |entry, buffer, found| {
        // SAFETY: every pointer is valid for the call; the buffer's length is
        // passed with it.
        unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                entry,
                buffer.as_mut_ptr(),
                buffer.len(),
                found,
            )
        }
    })
}

fn passwd_by_uid(uid: libc::uid_t) -> Result<Option<RunAs>, SetupError> {
    passwd_with(&uid.to_string(), |entry, buffer, found| {
        // SAFETY: as in `passwd_by_name`.
        unsafe { libc::getpwuid_r(uid, entry, buffer.as_mut_ptr(), buffer.len(), found) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_by_name_and_by_uid() {
        let by_name = RunAs::lookup("root").expect("lookup");
        assert_eq!((by_name.uid, by_name.gid), (0, 0));
        assert!(by_name.is_root());
        assert_eq!(RunAs::lookup("0").expect("lookup"), by_name);
    }

    #[test]
    fn an_unknown_user_is_named_in_the_error() {
        let err = RunAs::lookup("no-such-user-dts").unwrap_err();
        assert!(
            matches!(err, SetupError::NoSuchUser { ref user } if user == "no-such-user-dts"),
            "{err:?}"
        );
        assert!(RunAs::lookup("bad\0name").is_err());
    }

    #[test]
    fn the_current_user_is_this_process_s() {
        // SAFETY: geteuid cannot fail.
        let uid = unsafe { libc::geteuid() };
        assert_eq!(RunAs::current().expect("current").uid, uid);
    }
}
