//! The durable state on disk: the Engine's acceptor state
//! ([`DurableState`]) and the node's incarnation, in one file
//! `<data_dir>/node.state`.
//!
//! # Format
//!
//! ```text
//! | "CNDS" | version 1 | 0 0 0 | incarnation u64 LE | body_len u32 LE | crc32c u32 LE | body |
//! ```
//!
//! `body` is [`DurableState::encode`] (empty before the Engine first asks to
//! persist). The checksum covers incarnation, length and body: rkyv's
//! validation catches a malformed archive but not a flipped bit inside a
//! ballot number, and an acceptor that recovers a wrong ballot breaks the
//! promise it made.
//!
//! # Writing
//!
//! Write `node.state.tmp`, fsync it, rename it over `node.state`, fsync the
//! directory. A crash at any point leaves either the old or the new file
//! whole (rename(2) is atomic; the directory fsync makes the rename itself
//! durable). A leftover `.tmp` is ignored and overwritten.
//!
//! # Reading
//!
//! A missing directory is created, a missing file means a first start, and a
//! file that is truncated or fails its checks is a [`StateError`] naming the
//! file: never a silent fresh start, which would let this node vote twice in
//! one Paxos instance.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use concord_membership::DurableState;

use super::error::StateError;

const MAGIC: &[u8; 4] = b"CNDS";
const VERSION: u8 = 1;
const HEADER: usize = 24;
/// The state file's name in the data directory.
pub const STATE_FILE: &str = "node.state";
const FILE: &str = STATE_FILE;
const TMP: &str = "node.state.tmp";

/// What a restart recovers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The incarnation of the life that wrote the file.
    pub incarnation: u64,
    /// The Engine's acceptor state, if it ever asked to persist one.
    pub durable: Option<DurableState>,
}

impl Recovered {
    /// The incarnation the next life runs: above every incarnation the file
    /// records.
    pub fn next_incarnation(&self) -> u64 {
        let durable = self.durable.as_ref().map_or(0, |d| d.incarnation);
        self.incarnation.max(durable) + 1
    }
}

/// The state file of one data directory.
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    file: PathBuf,
    tmp: PathBuf,
}

impl StateStore {
    /// Opens `dir` (creating it if missing) and reads its state file, if any.
    pub fn open(dir: &Path) -> Result<(StateStore, Option<Recovered>), StateError> {
        fs::create_dir_all(dir).map_err(|source| StateError::Io {
            op: "create data directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let store = StateStore {
            dir: dir.to_path_buf(),
            file: dir.join(FILE),
            tmp: dir.join(TMP),
        };
        let bytes = match fs::read(&store.file) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok((store, None)),
            Err(source) => {
                return Err(StateError::Io {
                    op: "read state file",
                    path: store.file.clone(),
                    source,
                });
            }
        };
        let rec = parse(&store.file, &bytes)?;
        Ok((store, Some(rec)))
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// Replaces the state durably (temporary file, fsync, rename, fsync of
    /// the directory). Returns only once the new state survives a crash.
    pub fn write(
        &self,
        incarnation: u64,
        durable: Option<&DurableState>,
    ) -> Result<(), StateError> {
        let body = match durable {
            Some(d) => d.encode().map_err(|e| StateError::Corrupt {
                path: self.file.clone(),
                what: format!("cannot encode the state: {e}"),
            })?,
            None => Vec::new(),
        };
        let bytes = serialize(incarnation, &body);
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { op, path, source }
        };
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.tmp)
            .map_err(io("create", &self.tmp))?;
        f.write_all(&bytes).map_err(io("write", &self.tmp))?;
        f.sync_all().map_err(io("fsync", &self.tmp))?;
        drop(f);
        fs::rename(&self.tmp, &self.file).map_err(io("rename over", &self.file))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync directory", &self.dir))?;
        Ok(())
    }
}

fn serialize(incarnation: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[VERSION, 0, 0, 0]);
    out.extend_from_slice(&incarnation.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    let crc = checksum(&out[8..20], body);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn checksum(fields: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(fields), body)
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Recovered, StateError> {
    let corrupt = |what: String| StateError::Corrupt {
        path: path.to_path_buf(),
        what,
    };
    if bytes.len() < HEADER {
        return Err(StateError::Truncated {
            path: path.to_path_buf(),
            len: bytes.len(),
            need: HEADER,
        });
    }
    if &bytes[..4] != MAGIC {
        return Err(corrupt(format!("bad magic {:?}", &bytes[..4])));
    }
    if bytes[4] != VERSION {
        return Err(corrupt(format!("unknown format version {}", bytes[4])));
    }
    if bytes[5..8] != [0, 0, 0] {
        return Err(corrupt(format!(
            "reserved bytes {:?} are not zero",
            &bytes[5..8]
        )));
    }
    let incarnation = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let body_len = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
    let need = HEADER + body_len;
    if bytes.len() < need {
        return Err(StateError::Truncated {
            path: path.to_path_buf(),
            len: bytes.len(),
            need,
        });
    }
    if bytes.len() > need {
        return Err(corrupt(format!(
            "{} bytes after the end of the state",
            bytes.len() - need
        )));
    }
    let body = &bytes[HEADER..];
    let actual = checksum(&bytes[8..20], body);
    if actual != crc {
        return Err(corrupt(format!(
            "checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"
        )));
    }
    let durable = if body.is_empty() {
        None
    } else {
        Some(DurableState::decode(body).map_err(|e| corrupt(format!("acceptor state: {e}")))?)
    };
    Ok(Recovered {
        incarnation,
        durable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_membership::{
        Ballot, GroupAcceptor, GroupId, Instance, NodeId, Proposal, ProtocolVersion, View, ViewId,
    };

    fn state(inc: u64) -> DurableState {
        let proposal = Proposal {
            view: View {
                group: GroupId(5),
                id: ViewId::first_of(2),
                members: vec![NodeId(1), NodeId(3)],
                protocol: ProtocolVersion(1),
            },
            cut: 17,
            old_members: vec![NodeId(1), NodeId(2), NodeId(3)],
            next: Vec::new(),
            incarnations: vec![1, 2],
        };
        DurableState {
            incarnation: inc,
            groups: vec![GroupAcceptor {
                group: GroupId(5),
                decided: Some((2, proposal.clone())),
                instances: vec![Instance {
                    epoch: 3,
                    promised: Ballot {
                        round: 4,
                        leader: 3,
                    },
                    accepted: Some((
                        Ballot {
                            round: 4,
                            leader: 3,
                        },
                        proposal,
                    )),
                }],
            }],
        }
    }

    #[test]
    fn a_missing_directory_is_created_and_means_a_first_start() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/c");
        let (store, rec) = StateStore::open(&dir).unwrap();
        assert!(dir.is_dir());
        assert_eq!(rec, None);
        assert_eq!(store.path(), dir.join(FILE));
    }

    #[test]
    fn what_was_written_is_recovered() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = StateStore::open(tmp.path()).unwrap();
        store.write(1, None).unwrap();
        let (_, rec) = StateStore::open(tmp.path()).unwrap();
        assert_eq!(
            rec,
            Some(Recovered {
                incarnation: 1,
                durable: None
            })
        );
        store.write(3, Some(&state(3))).unwrap();
        let (_, rec) = StateStore::open(tmp.path()).unwrap();
        let rec = rec.unwrap();
        assert_eq!(rec.durable, Some(state(3)));
        assert_eq!(rec.next_incarnation(), 4);
        assert!(!tmp.path().join(TMP).exists());
    }

    #[test]
    fn the_next_incarnation_is_above_both_records() {
        let r = Recovered {
            incarnation: 2,
            durable: Some(state(7)),
        };
        assert_eq!(r.next_incarnation(), 8);
        let r = Recovered {
            incarnation: 9,
            durable: None,
        };
        assert_eq!(r.next_incarnation(), 10);
    }

    #[test]
    fn a_leftover_temporary_file_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = StateStore::open(tmp.path()).unwrap();
        store.write(2, Some(&state(2))).unwrap();
        fs::write(tmp.path().join(TMP), b"half-written garbage").unwrap();
        let (_, rec) = StateStore::open(tmp.path()).unwrap();
        assert_eq!(rec.unwrap().durable, Some(state(2)));
    }

    fn written(tmp: &Path) -> Vec<u8> {
        let (store, _) = StateStore::open(tmp).unwrap();
        store.write(5, Some(&state(5))).unwrap();
        fs::read(tmp.join(FILE)).unwrap()
    }

    fn open_err(tmp: &Path, bytes: &[u8]) -> StateError {
        fs::write(tmp.join(FILE), bytes).unwrap();
        StateStore::open(tmp).expect_err("a damaged state file must be refused")
    }

    #[test]
    fn a_truncated_file_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let bytes = written(tmp.path());
        for len in [0, 3, HEADER - 1, HEADER, bytes.len() - 1] {
            let e = open_err(tmp.path(), &bytes[..len]);
            assert!(
                matches!(&e, StateError::Truncated { path, .. } if path == &tmp.path().join(FILE)),
                "len {len}: {e:?}"
            );
            assert!(e.to_string().contains("node.state"), "{e}");
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let bytes = written(tmp.path());
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            let e = open_err(tmp.path(), &bad);
            assert!(
                matches!(
                    &e,
                    StateError::Corrupt { path, .. } | StateError::Truncated { path, .. }
                        if path == &tmp.path().join(FILE)
                ),
                "byte {at}: {e:?}"
            );
            assert!(e.to_string().contains("node.state"), "{e}");
        }
    }

    #[test]
    fn trailing_bytes_are_corruption() {
        let tmp = tempfile::tempdir().unwrap();
        let mut bytes = written(tmp.path());
        bytes.push(0);
        assert!(matches!(
            open_err(tmp.path(), &bytes),
            StateError::Corrupt { .. }
        ));
    }

    #[test]
    fn an_unreadable_directory_entry_is_an_io_error() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join(FILE)).unwrap();
        assert!(matches!(
            StateStore::open(tmp.path()),
            Err(StateError::Io { .. })
        ));
    }
}
