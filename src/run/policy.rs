//! The one error policy: what a failed run or vault means for whoever started it. One `match`
//! turns an [`ErrorKind`] into the HTTP status of the on-demand route, the CLI's exit code and
//! whether trying again later can help; the edges (the server, the CLI, the notification) ask
//! here and decide nothing themselves.

use crate::reconcile::ErrorKind;

/// How an edge answers an error of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disposition {
    /// The status `POST /api/sync` answers with.
    pub http_status: u16,
    /// The exit code of `tagfence apply` (and every other subcommand that fails).
    pub exit_code: u8,
    /// Whether running again later, unchanged, may succeed.
    pub retry_helps: bool,
}

/// The disposition of an error kind.
pub fn disposition(kind: ErrorKind) -> Disposition {
    let (http_status, retry_helps) = match kind {
        // Nothing written; a person must look (the message says at what). 409: the request
        // conflicts with the vault's current state.
        ErrorKind::Refused => (409, false),
        // Another writer holds or moved the vault: the same request succeeds once it is done.
        ErrorKind::Conflict => (409, true),
        ErrorKind::Throttled => (503, true),
        // The gateway's upstream (ARM, Blob storage, the Service Tags source) failed.
        ErrorKind::Unavailable => (502, true),
        // The upstream refused the request itself (a missing role, a vault that does not
        // exist): a dependency failed in a way only a fix changes.
        ErrorKind::Rejected => (424, false),
        ErrorKind::BadRequest => (400, false),
        ErrorKind::Forbidden => (403, false),
        ErrorKind::NotConfigured | ErrorKind::Bug => (500, false),
    };
    Disposition {
        http_status,
        // The documented contract of the CLI: 0 success, 1 `plan --exit-code` found changes,
        // 2 any error. The kind is in the message and the JSON output.
        exit_code: 2,
        retry_helps,
    }
}

/// Which of two kinds a run that hit both reports: the one least likely to go away by itself
/// (a bug or a setting before a dependency's refusal, before an outage, before throttling,
/// before another writer, before a refusal that is already understood).
pub fn worst(a: ErrorKind, b: ErrorKind) -> ErrorKind {
    if rank(a) >= rank(b) {
        a
    } else {
        b
    }
}

fn rank(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Refused => 0,
        ErrorKind::Conflict => 1,
        ErrorKind::Throttled => 2,
        ErrorKind::Unavailable => 3,
        ErrorKind::Rejected => 4,
        ErrorKind::BadRequest => 5,
        ErrorKind::Forbidden => 6,
        ErrorKind::NotConfigured => 7,
        ErrorKind::Bug => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorKind; 9] = [
        ErrorKind::Refused,
        ErrorKind::Conflict,
        ErrorKind::Throttled,
        ErrorKind::Unavailable,
        ErrorKind::Rejected,
        ErrorKind::BadRequest,
        ErrorKind::Forbidden,
        ErrorKind::NotConfigured,
        ErrorKind::Bug,
    ];

    #[test]
    fn every_kind_is_an_http_error_and_fails_the_cli() {
        for kind in ALL {
            let d = disposition(kind);
            assert!((400..600).contains(&d.http_status), "{kind}");
            assert_eq!(d.exit_code, 2, "{kind}");
        }
        assert_eq!(disposition(ErrorKind::Refused).http_status, 409);
        assert_eq!(disposition(ErrorKind::Throttled).http_status, 503);
        assert_eq!(disposition(ErrorKind::Unavailable).http_status, 502);
        assert_eq!(disposition(ErrorKind::Rejected).http_status, 424);
        assert!(!disposition(ErrorKind::Refused).retry_helps);
        assert!(disposition(ErrorKind::Conflict).retry_helps);
    }

    #[test]
    fn the_worst_kind_is_the_least_likely_to_clear_by_itself() {
        assert_eq!(
            worst(ErrorKind::Refused, ErrorKind::Unavailable),
            ErrorKind::Unavailable
        );
        assert_eq!(
            worst(ErrorKind::Rejected, ErrorKind::Throttled),
            ErrorKind::Rejected
        );
        for a in ALL {
            for b in ALL {
                assert_eq!(worst(a, b), worst(b, a));
            }
        }
    }
}
