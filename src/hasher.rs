//! Password hashing (argon2id, OWASP parameters) on a bounded pool of its
//! own: `workers` threads at the lowest scheduling priority (nice 19), so
//! that a core busy with decisions is never taken by a hash (logins slow
//! down instead, and use idle cores at full speed); at most `queue` more
//! hashes wait, and beyond that a login is answered `RESOURCE_EXHAUSTED` at
//! once.

use std::sync::{mpsc, Arc, Mutex};

use argon2::{
    password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString},
    Algorithm, Argon2, Params, Version,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::domain::{credential::Password, Error};

/// Argon2id cost: memory in KiB, iterations, lanes (OWASP: 19 MiB, 2, 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub lanes: u32,
}

impl Default for Cost {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            lanes: 1,
        }
    }
}

/// What checking a password found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub matches: bool,
    /// A new hash with today's cost, when the password matched a hash made
    /// with another.
    pub rehashed: Option<String>,
}

/// A hash to compute on the pool's threads.
type Job = Box<dyn FnOnce(&Argon2<'static>) + Send>;

/// The pool. Cheap to clone; its threads end when the last clone is dropped.
#[derive(Clone)]
pub struct Hasher {
    cost: Cost,
    /// To the pool's threads; room for every admitted job.
    jobs: mpsc::SyncSender<Job>,
    /// One permit per hash running or waiting, held by the job itself.
    admitted: Arc<Semaphore>,
    /// A hash of nothing anyone knows, verified when there is no user or no
    /// password, so that every refusal costs the same.
    dummy: Arc<String>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher").field("cost", &self.cost).finish()
    }
}

impl Hasher {
    /// A pool of `workers` (at least one) with room for `queue` waiting.
    pub fn new(cost: Cost, workers: usize, queue: usize) -> Result<Self, Error> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.lanes, None)
            .map_err(|e| Error::Internal(format!("argon2 parameters: {e}")))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut unknown = [0u8; 32];
        getrandom::fill(&mut unknown).map_err(|e| Error::Internal(format!("os rng: {e}")))?;
        let dummy = hash_with(&argon, &unknown)?;
        let workers = workers.max(1);
        let (jobs, pending) = mpsc::sync_channel::<Job>(workers + queue);
        let pending = Arc::new(Mutex::new(pending));
        let argon = Arc::new(argon);
        for n in 0..workers {
            let (pending, argon) = (pending.clone(), argon.clone());
            std::thread::Builder::new()
                .name(format!("clef-hasher-{n}"))
                .spawn(move || {
                    lowest_priority();
                    loop {
                        let job = match pending.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(&argon),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| Error::Internal(format!("password pool thread: {e}")))?;
        }
        Ok(Self {
            cost,
            jobs,
            admitted: Arc::new(Semaphore::new(workers + queue)),
            dummy: Arc::new(dummy),
        })
    }

    /// The pool sized for this machine: half its cores (at least one), and
    /// 64 waiting per worker.
    pub fn for_this_machine(cost: Cost) -> Result<Self, Error> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = (cores / 2).max(1);
        Self::new(cost, workers, workers * 64)
    }

    /// Hashes a new password (a PHC string).
    pub async fn hash(&self, password: &Password) -> Result<String, Error> {
        let password = password.clone();
        self.run(move |argon| hash_with(argon, password.expose()))
            .await?
    }

    /// Hashes a new password for a batch (an import's password column):
    /// waits for room in the queue instead of being refused, so that a
    /// batch takes at most one worker at a time and logins keep the others.
    pub async fn hash_patiently(&self, password: &Password) -> Result<String, Error> {
        let admitted = self
            .admitted
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("password pool closed".into()))?;
        let password = password.clone();
        self.work(admitted, move |argon| hash_with(argon, password.expose()))
            .await?
    }

    /// Checks `password` against `hash`, or against the dummy hash when
    /// there is none (the answer is then `false`, after the same work).
    pub async fn verify(&self, hash: Option<&str>, password: &Password) -> Result<Verified, Error> {
        let known = hash.is_some();
        let hash = hash.map_or_else(|| (*self.dummy).clone(), str::to_owned);
        let password = password.clone();
        let cost = self.cost;
        self.run(move |argon| {
            let Ok(parsed) = PasswordHash::new(&hash) else {
                return Ok(Verified {
                    matches: false,
                    rehashed: None,
                });
            };
            // The parameters of the hash, not ours: an old hash verifies.
            let matches = Argon2::default()
                .verify_password(password.expose(), &parsed)
                .is_ok()
                && known;
            let rehashed = if matches && !made_with(&parsed, cost) {
                Some(hash_with(argon, password.expose())?)
            } else {
                None
            };
            Ok(Verified { matches, rehashed })
        })
        .await?
    }

    /// Runs `work` on the pool, or refuses at once when the queue is full.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let admitted = self.admitted.clone().try_acquire_owned().map_err(|_| {
            Error::ResourceExhausted(
                "too many password checks are waiting; retry in a moment".into(),
            )
        })?;
        self.work(admitted, work).await
    }

    /// Runs `work` on the pool. The permit goes with the work, not with the
    /// request: a caller who gives up (a cancelled call) frees nothing until
    /// the hash he started is done, so the pool stays bounded.
    async fn work<T: Send + 'static>(
        &self,
        admitted: OwnedSemaphorePermit,
        work: impl FnOnce(&Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |argon| {
            let _admitted = admitted;
            let _ = done.send(work(argon));
        });
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => Error::ResourceExhausted(
                "too many password checks are waiting; retry in a moment".into(),
            ),
            mpsc::TrySendError::Disconnected(_) => Error::Internal("password pool stopped".into()),
        })?;
        result
            .await
            .map_err(|_| Error::Internal("password hashing failed".into()))
    }

    /// A valid hash of nothing anyone knows: what a dry run writes in place
    /// of the passwords it does not hash.
    pub fn placeholder(&self) -> String {
        (*self.dummy).clone()
    }
}

/// Puts the calling thread at the lowest priority (nice 19): it runs only on
/// time other threads leave.
fn lowest_priority() {
    // SAFETY: setpriority on the calling thread's own id has no memory
    // effects; failure leaves the priority as it was.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
    }
}

fn hash_with(argon: &Argon2<'static>, password: &[u8]) -> Result<String, Error> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| Error::Internal(format!("os rng: {e}")))?;
    let salt =
        SaltString::encode_b64(&salt).map_err(|e| Error::Internal(format!("argon2 salt: {e}")))?;
    argon
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("argon2: {e}")))
}

/// Whether `hash` is argon2id v1.3 with `cost`.
fn made_with(hash: &PasswordHash<'_>, cost: Cost) -> bool {
    let Ok(params) = Params::try_from(hash) else {
        return false;
    };
    hash.algorithm == Algorithm::Argon2id.ident()
        && hash.version == Some(Version::V0x13.into())
        && params.m_cost() == cost.memory_kib
        && params.t_cost() == cost.iterations
        && params.p_cost() == cost.lanes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Cost {
        Cost {
            memory_kib: 64,
            iterations: 1,
            lanes: 1,
        }
    }

    #[tokio::test]
    async fn verifies_and_rehashes_when_the_cost_changed() {
        let old = Hasher::new(cheap(), 1, 4).unwrap();
        let pw = Password::new("correct horse battery").unwrap();
        let hash = old.hash(&pw).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        let same = old.verify(Some(&hash), &pw).await.unwrap();
        assert_eq!(
            same,
            Verified {
                matches: true,
                rehashed: None
            }
        );
        let wrong = Password::presented("correct horse batterY").unwrap();
        assert!(!old.verify(Some(&hash), &wrong).await.unwrap().matches);
        assert!(!old.verify(None, &pw).await.unwrap().matches);

        let new = Hasher::new(
            Cost {
                memory_kib: 128,
                ..cheap()
            },
            1,
            4,
        )
        .unwrap();
        let v = new.verify(Some(&hash), &pw).await.unwrap();
        assert!(v.matches);
        assert!(v
            .rehashed
            .unwrap()
            .starts_with("$argon2id$v=19$m=128,t=1,p=1$"));
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once() {
        let h = Hasher::new(cheap(), 1, 0).unwrap();
        let _held = h.admitted.clone().try_acquire_owned().unwrap();
        let pw = Password::new("correct horse battery").unwrap();
        assert!(matches!(
            h.hash(&pw).await,
            Err(Error::ResourceExhausted(_))
        ));
    }
}
