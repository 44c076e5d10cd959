//! Container and exec IDs come from the host: they are validated before any
//! path is built from them.

/// Longest ID accepted (container runtimes use 64 hex characters).
pub const MAX_ID_LEN: usize = 128;

/// Checks a container or exec ID: 1-128 characters of `[A-Za-z0-9_.-]`,
/// not starting with `.` or `-` (so never `.`/`..` and never an option).
pub fn validate(kind: &str, id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("{kind} is empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!("{kind} is longer than {MAX_ID_LEN} characters"));
    }
    if id.starts_with(['.', '-']) {
        return Err(format!("{kind} {id:?} starts with '.' or '-'"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "{kind} {:?} contains {c:?}; only letters, digits, '_', '.' and '-' are allowed",
            id.chars().take(MAX_ID_LEN).collect::<String>()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn ids() {
        for ok in ["c1", "abc-DEF_0.9", &"a".repeat(128)] {
            assert!(validate("container_id", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "-rf",
            "a b",
            "é",
            "a\0",
            &"a".repeat(129),
        ] {
            assert!(validate("container_id", bad).is_err(), "{bad:?}");
        }
    }
}
