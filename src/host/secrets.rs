//! The secrets a state flow handles, as the flow sees them: text made safe for the
//! load-log and the daemon's log, and the reservation user's password. Flows come here
//! rather than to `prim::secret`, so they keep to routines and data (the arrow is
//! state → host → prim).

use std::borrow::Cow;

use crate::prim::secret;

pub use crate::prim::secret::SecretError;

/// Length of a reservation password provhost generates (long enough to be tracked).
pub const PASSWORD_LEN: i64 = 16;

/// `text` with every known secret replaced by `********` (before it is written anywhere).
pub fn redact(text: &str) -> Cow<'_, str> {
    secret::redact(text)
}

/// The password of `reservation` given the one stored (`reservation.pw`): the stored one,
/// now tracked for redaction, or — when none is stored — a new one (tracked too); the flag
/// says it is new and must be stored. Both are tracked in the reservation's own scope until
/// [`forget_reservation`].
pub fn reservation_password(
    reservation: i64,
    stored: String,
) -> Result<(String, bool), SecretError> {
    let scope = secret::Scope::Reservation(reservation);
    if stored.is_empty() {
        Ok((secret::password_in(scope, PASSWORD_LEN)?, true))
    } else {
        secret::remember_in(scope, &stored);
        Ok((stored, false))
    }
}

/// Forget every secret tracked for `reservation` (at reclaim: it is no longer used);
/// returns how many were tracked.
pub fn forget_reservation(reservation: i64) -> usize {
    secret::forget_scope(reservation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_password_is_kept_and_redacted_a_missing_one_made() {
        let (pw, new) = reservation_password(7, "stored-pw-4711".into()).expect("stored");
        assert_eq!((pw.as_str(), new), ("stored-pw-4711", false));
        assert_eq!(redact("login with stored-pw-4711"), "login with ********");
        let (pw, new) = reservation_password(7, String::new()).expect("generated");
        assert!(new);
        assert_eq!(pw.len(), PASSWORD_LEN as usize);
        assert!(!redact(&format!("pw {pw}")).contains(&pw));
        assert_eq!(forget_reservation(7), 2);
        assert!(redact(&format!("pw {pw}")).contains(&pw));
    }
}
