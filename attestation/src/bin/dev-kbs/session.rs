//! RCAR sessions: what `/auth` hands out (a cookie and a nonce) and what
//! `/attest` turns into an attested session holding its token.
//!
//! Memory is bounded: every session has the same lifetime, so insertion
//! order is expiry order and a queue finds the expired and the oldest ones
//! cheaply; beyond the cap the oldest sessions are dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use attestation::Tee;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand_core::{OsRng, RngCore as _};

/// Bytes of randomness in a nonce (the reference KBS uses 32).
const NONCE_LEN: usize = 32;
/// Bytes of randomness in a session id (32 lowercase hex characters).
const SESSION_ID_LEN: usize = 16;

/// One session, as handed out to handlers (a copy).
#[derive(Debug, Clone)]
pub struct Session {
    /// The challenge nonce the evidence must bind.
    pub nonce: String,
    /// The TEE named in `/auth`.
    pub tee: Tee,
    /// When the cookie expires (for `Set-Cookie: Expires=`).
    pub expires_wall: SystemTime,
    /// The token, once the session is attested.
    pub token: Option<String>,
}

/// A session and its monotonic deadline.
#[derive(Debug)]
struct Entry {
    session: Session,
    expires_at: Instant,
}

/// The table behind the lock.
#[derive(Debug, Default)]
struct Inner {
    map: HashMap<String, Entry>,
    /// Ids in creation (= expiry) order; may hold ids already removed.
    order: VecDeque<(Instant, String)>,
}

/// The session table, shared by all requests.
#[derive(Debug)]
pub struct Sessions {
    inner: Mutex<Inner>,
    ttl: Duration,
    cap: usize,
}

impl Sessions {
    /// A table whose sessions live `ttl`, holding at most `cap` of them.
    pub fn new(ttl: Duration, cap: usize) -> Self {
        Sessions {
            inner: Mutex::new(Inner::default()),
            ttl,
            cap: cap.max(1),
        }
    }

    /// Locks the table; a panic elsewhere while holding it leaves a table
    /// that is still consistent enough to keep serving.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new session for `tee`: returns its id and a copy of it.
    pub fn create(&self, tee: Tee) -> (String, Session) {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let mut id = [0u8; SESSION_ID_LEN];
        OsRng.fill_bytes(&mut id);
        let id = hex::encode(id);
        let now = Instant::now();
        let session = Session {
            nonce: STANDARD.encode(nonce),
            tee,
            expires_wall: SystemTime::now() + self.ttl,
            token: None,
        };
        let mut inner = self.lock();
        purge(&mut inner, now);
        while inner.map.len() >= self.cap {
            match inner.order.pop_front() {
                Some((_, old)) => {
                    inner.map.remove(&old);
                }
                None => break,
            }
        }
        inner.map.insert(
            id.clone(),
            Entry {
                session: session.clone(),
                expires_at: now + self.ttl,
            },
        );
        inner.order.push_back((now + self.ttl, id.clone()));
        (id, session)
    }

    /// The live session `id`, if any (an expired one is removed).
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut inner = self.lock();
        match inner.map.get(id) {
            Some(e) if e.expires_at > now => Some(e.session.clone()),
            Some(_) => {
                inner.map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Marks session `id` attested with `token` and returns the session's
    /// token: the one given, or the one it already had (a session is
    /// attested once). `None` if the session is gone.
    pub fn set_attested(&self, id: &str, token: String) -> Option<String> {
        let now = Instant::now();
        let mut inner = self.lock();
        let entry = inner.map.get_mut(id).filter(|e| e.expires_at > now)?;
        Some(entry.session.token.get_or_insert(token).clone())
    }

    /// Drops the expired sessions.
    pub fn purge_expired(&self) {
        let mut inner = self.lock();
        purge(&mut inner, Instant::now());
    }

    /// How many sessions are held (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }
}

/// Pops the expired (or already removed) ids off the front of the queue.
fn purge(inner: &mut Inner, now: Instant) {
    while let Some((expires_at, id)) = inner.order.front() {
        let live = inner.map.contains_key(id);
        if live && *expires_at > now {
            break;
        }
        if live {
            let id = id.clone();
            inner.map.remove(&id);
        }
        inner.order.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_nonces_have_the_wire_shape() {
        let s = Sessions::new(Duration::from_secs(60), 10);
        let (id, session) = s.create(Tee::Sample);
        assert_eq!(id.len(), 32);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(STANDARD.decode(&session.nonce).unwrap().len(), 32);
        assert!(s.get(&id).is_some());
        assert!(s.get("nope").is_none());
    }

    #[test]
    fn attested_once_keeps_the_first_token() {
        let s = Sessions::new(Duration::from_secs(60), 10);
        let (id, _) = s.create(Tee::Sample);
        assert_eq!(s.set_attested(&id, "a".into()).as_deref(), Some("a"));
        assert_eq!(s.set_attested(&id, "b".into()).as_deref(), Some("a"));
        assert_eq!(s.get(&id).unwrap().token.as_deref(), Some("a"));
        assert!(s.set_attested("gone", "c".into()).is_none());
    }

    #[test]
    fn the_cap_drops_the_oldest() {
        let s = Sessions::new(Duration::from_secs(60), 3);
        let ids: Vec<String> = (0..5).map(|_| s.create(Tee::Sample).0).collect();
        assert_eq!(s.len(), 3);
        assert!(s.get(&ids[0]).is_none());
        assert!(s.get(&ids[1]).is_none());
        assert!(s.get(&ids[4]).is_some());
    }

    #[test]
    fn expired_sessions_are_gone() {
        let s = Sessions::new(Duration::from_millis(1), 10);
        let (id, _) = s.create(Tee::Sample);
        std::thread::sleep(Duration::from_millis(5));
        assert!(s.get(&id).is_none());
        s.create(Tee::Sample);
        std::thread::sleep(Duration::from_millis(5));
        s.purge_expired();
        assert_eq!(s.len(), 0);
        assert!(s.lock().order.is_empty());
    }
}
