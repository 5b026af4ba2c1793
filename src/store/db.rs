//! The RocksDB database of the state store: per input partition, the open windows' aggregates and
//! the checkpoint they correspond to, always written together in one atomic `WriteBatch`; and the
//! instance id kept beside them.
use std::path::Path;

use rocksdb::{
    ColumnFamilyDescriptor, DBCompressionType, DBRecoveryMode, Direction, IteratorMode, Options,
    WriteBatch, WriteOptions, DB,
};

use smol_str::SmolStr;

use super::layout::{
    decode_aggregate, decode_checkpoint, decode_rollup_suffix, decode_window_suffix,
    encode_aggregate, encode_aggregate_with, encode_checkpoint, partition_key, rollup_key,
    window_key,
};
use crate::checkpoint::{PartitionCheckpoint, TopicPartition};
use crate::window::{Aggregate, StoredWindow};

const WINDOWS: &str = "windows";
/// The windows of the larger sizes (`--window 1m,5m,1h`): a family of its own, created only when
/// rollups are on, so a store that never had them opens in versions without them.
const ROLLUPS: &str = "rollups";
/// One memtable's size; a full one is flushed to an SST file in the background.
const MEMTABLE_BYTES: usize = 8 << 20;
/// All memtables of the database together (the active ones and those being flushed).
const MEMTABLE_BUDGET_BYTES: usize = 16 << 20;
const PARTITIONS: &str = "partitions";
/// What the store records about how its state was made, in the default column family: state made
/// under one of these is never continued under another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The window semantics ([`crate::checkpoint::Semantics`]'s text).
    Semantics,
    /// The consumer group whose offsets the stored checkpoints go with.
    Group,
    /// The input topics' partition counts as last seen, and before their last increase
    /// (`processor::split`), so a restart knows of partitions added meanwhile or before it.
    PartitionCounts,
}

impl Recorded {
    fn key(self) -> &'static [u8] {
        match self {
            Recorded::Semantics => b"semantics",
            Recorded::Group => b"group",
            Recorded::PartitionCounts => b"partition-counts",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Recorded::Semantics => "settings",
            Recorded::Group => "group",
            Recorded::PartitionCounts => "partition counts",
        }
    }
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state store in {dir}: {cause}")]
    Open { dir: String, cause: String },
    #[error("state store: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("state store holds a malformed {what} record (written by another version?)")]
    Corrupt { what: &'static str },
    #[error("state store: windows of several sizes to write, but opened without rollups")]
    NoRollups,
}

/// What a checkpoint writes for one partition.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionUpdate {
    pub partition: TopicPartition,
    pub checkpoint: PartitionCheckpoint,
    /// Per window size, smallest first.
    pub levels: Vec<LevelUpdate>,
}

/// What a checkpoint writes for the windows of one size of one partition.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelUpdate {
    pub size_ms: i64,
    /// Windows starting before this are closed: deleted.
    pub closed_before: i64,
    /// Open windows that changed: written.
    pub changed: Vec<(i64, SmolStr, Aggregate)>,
}

/// Size of the state store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub keys: u64,
    pub bytes: u64,
}

/// The RocksDB database in the state directory.
pub struct StateStore {
    db: DB,
    /// Whether the [`ROLLUPS`] family is open (rollups on, or were once).
    rollups: bool,
}

impl StateStore {
    /// Opens (creating if needed) the store in `dir`, with the rollup windows' family if `rollups`
    /// or if it exists.
    pub fn open(dir: &Path, rollups: bool) -> Result<Self, StoreError> {
        let open_error = |cause: String| StoreError::Open {
            dir: dir.display().to_string(),
            cause,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_error(e.to_string()))?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        // Checkpoints are written without an fsync (an fsync per checkpoint held up the poll loop
        // for 2–100 ms a second). A killed process loses nothing: the log is the OS's once written.
        // A power loss loses the last writes, and recovery keeps the log's longest intact prefix,
        // so the store holds an earlier checkpoint whole, never part of one. Under exactly-once,
        // which writes here after the transaction, its position is then behind the group's commit
        // and the partition is rebuilt from the commit, as after a lost state dir. Under
        // at-least-once the log is synced before each group commit (`processor::group_commit`),
        // so the store is never behind the group: processing resumes from it and emits the
        // windows closed since then again.
        options.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
        // Memory: RocksDB's defaults (a 64 MiB memtable per family, two of them while one flushes)
        // would be the largest item in the RSS of an instance holding many sources, since every
        // checkpoint writes each changed window. 8 MiB memtables (Kafka Streams uses 16 MiB) are
        // plenty: the store is written in per-checkpoint batches and read only on restore.
        options.set_db_write_buffer_size(MEMTABLE_BUDGET_BYTES);
        let mut family = Options::default();
        family.set_write_buffer_size(MEMTABLE_BYTES);
        family.set_max_write_buffer_number(2);
        family.set_compression_type(DBCompressionType::Lz4);
        family.set_bottommost_compression_type(DBCompressionType::Zstd);
        let rollups = rollups
            || DB::list_cf(&options, dir)
                .map(|existing| existing.iter().any(|name| name == ROLLUPS))
                .unwrap_or(false);
        let mut families = vec![
            ColumnFamilyDescriptor::new(WINDOWS, family.clone()),
            ColumnFamilyDescriptor::new(PARTITIONS, family.clone()),
        ];
        if rollups {
            families.push(ColumnFamilyDescriptor::new(ROLLUPS, family));
        }
        let db = DB::open_cf_descriptors(&options, dir, families)
            .map_err(|e| open_error(e.into_string()))?;
        Ok(StateStore { db, rollups })
    }

    fn family(&self, name: &str) -> &rocksdb::ColumnFamily {
        // Both families are created by `open`, so they always exist.
        self.db
            .cf_handle(name)
            .unwrap_or_else(|| unreachable!("column family {name} is created by open"))
    }

    /// The stored checkpoint and open windows of `partition` (of every size: `base_size_ms` is the
    /// smallest's), if it has any.
    pub fn load(
        &self,
        partition: &TopicPartition,
        base_size_ms: i64,
    ) -> Result<Option<(PartitionCheckpoint, Vec<StoredWindow>)>, StoreError> {
        let key = partition_key(partition);
        let Some(bytes) = self.db.get_cf(self.family(PARTITIONS), &key)? else {
            return Ok(None);
        };
        let checkpoint = decode_checkpoint(&bytes).ok_or(StoreError::Corrupt {
            what: "partition checkpoint",
        })?;
        let mut windows = Vec::new();
        for item in self.db.iterator_cf(
            self.family(WINDOWS),
            IteratorMode::From(&key, Direction::Forward),
        ) {
            let (window_key, value) = item?;
            let Some(rest) = window_key.strip_prefix(key.as_slice()) else {
                break;
            };
            let (start, source) =
                decode_window_suffix(rest).ok_or(StoreError::Corrupt { what: "window key" })?;
            windows.push(StoredWindow {
                size_ms: base_size_ms,
                start,
                source,
                aggregate: decode_stored(&value)?,
            });
        }
        if self.rollups {
            for item in self.db.iterator_cf(
                self.family(ROLLUPS),
                IteratorMode::From(&key, Direction::Forward),
            ) {
                let (window_key, value) = item?;
                let Some(rest) = window_key.strip_prefix(key.as_slice()) else {
                    break;
                };
                let (size_ms, start, source) =
                    decode_rollup_suffix(rest).ok_or(StoreError::Corrupt { what: "window key" })?;
                windows.push(StoredWindow {
                    size_ms,
                    start,
                    source,
                    aggregate: decode_stored(&value)?,
                });
            }
        }
        Ok(Some((checkpoint, windows)))
    }

    /// Writes every update in one atomic batch, through the write-ahead log but without waiting for
    /// the disk (no fsync; see [`StateStore::open`] for why that is safe).
    pub fn write(&self, updates: &[PartitionUpdate]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let (windows, partitions) = (self.family(WINDOWS), self.family(PARTITIONS));
        for update in updates {
            let key = partition_key(&update.partition);
            for (index, level) in update.levels.iter().enumerate() {
                let family = match index {
                    0 => windows,
                    _ if self.rollups => self.family(ROLLUPS),
                    // `pipeline` opens the store with rollups whenever there are several sizes.
                    _ => return Err(StoreError::NoRollups),
                };
                let window = |start: i64, source: &str| match index {
                    0 => window_key(&key, start, source),
                    _ => rollup_key(&key, level.size_ms, start, source),
                };
                batch.delete_range_cf(
                    family,
                    window(i64::MIN, ""),
                    window(level.closed_before, ""),
                );
                for (start, source, aggregate) in &level.changed {
                    let window = window(*start, source);
                    match &aggregate.sketch {
                        None => batch.put_cf(family, window, encode_aggregate(aggregate)),
                        Some(sketch) => {
                            batch.put_cf(family, window, encode_aggregate_with(aggregate, sketch))
                        }
                    }
                }
            }
            batch.put_cf(partitions, &key, encode_checkpoint(&update.checkpoint));
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// Syncs the write-ahead log to disk: every checkpoint written so far survives a power loss.
    pub fn sync_log(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true)?;
        Ok(())
    }

    /// Estimated keys and bytes (SST files plus memtables) of the store, for the metrics; RocksDB's
    /// own estimates, cheap to read.
    pub fn stats(&self) -> StoreStats {
        let mut stats = StoreStats::default();
        let rollups = self.rollups.then_some(ROLLUPS);
        for family in [WINDOWS, PARTITIONS].into_iter().chain(rollups) {
            let cf = self.family(family);
            let property = |name: &str| {
                self.db
                    .property_int_value_cf(cf, name)
                    .ok()
                    .flatten()
                    .unwrap_or(0)
            };
            stats.keys += property("rocksdb.estimate-num-keys");
            stats.bytes += property("rocksdb.total-sst-files-size")
                + property("rocksdb.cur-size-all-mem-tables");
        }
        stats
    }

    /// What the store recorded under `name` ([`Recorded`]), if anything.
    pub fn recorded(&self, name: Recorded) -> Result<Option<String>, StoreError> {
        match self.db.get(name.key())? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| StoreError::Corrupt { what: name.what() }),
        }
    }

    /// Records `value` under `name` (synced: it guards every later checkpoint).
    pub fn record(&self, name: Recorded, value: &str) -> Result<(), StoreError> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.put_opt(name.key(), value, &options)?;
        Ok(())
    }

    /// Forgets everything stored for `partition` (its local state is stale).
    pub fn forget(&self, partition: &TopicPartition) -> Result<(), StoreError> {
        let key = partition_key(partition);
        let mut batch = WriteBatch::default();
        let mut end = key.clone();
        end.push(0xff);
        batch.delete_range_cf(self.family(WINDOWS), key.as_slice(), end.as_slice());
        if self.rollups {
            batch.delete_range_cf(self.family(ROLLUPS), key.as_slice(), end.as_slice());
        }
        batch.delete_cf(self.family(PARTITIONS), &key);
        self.db.write(batch)?;
        Ok(())
    }
}

fn decode_stored(value: &[u8]) -> Result<Aggregate, StoreError> {
    decode_aggregate(value).ok_or(StoreError::Corrupt {
        what: "window aggregate",
    })
}

/// The name of the instance that owns `dir`: generated on first use and kept in `dir/instance-id`, so
/// a restarted instance gets the same transactional id and fences its previous incarnation.
pub fn instance_id(dir: &Path) -> Result<String, StoreError> {
    let path = dir.join("instance-id");
    let open_error = |e: std::io::Error| StoreError::Open {
        dir: dir.display().to_string(),
        cause: e.to_string(),
    };
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(open_error(e)),
    }
    let id = format!("{:016x}", rand::random::<u64>());
    let temporary = dir.join("instance-id.tmp");
    std::fs::write(&temporary, &id)
        .and_then(|()| std::fs::rename(&temporary, &path))
        .map_err(open_error)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Generation;
    use crate::store::layout::tests::{agg, tp};

    /// One partition's update with windows of one size (a minute).
    fn update(
        partition: &TopicPartition,
        next_offset: i64,
        stream_time: i64,
        closed_before: i64,
        changed: Vec<(i64, SmolStr, Aggregate)>,
    ) -> PartitionUpdate {
        PartitionUpdate {
            partition: partition.clone(),
            checkpoint: PartitionCheckpoint {
                next_offset,
                stream_time: Some(stream_time),
                generation: Generation(3),
            },
            levels: vec![LevelUpdate {
                size_ms: 60_000,
                closed_before,
                changed,
            }],
        }
    }

    fn stored(size_ms: i64, start: i64, source: &str, aggregate: Aggregate) -> StoredWindow {
        StoredWindow {
            size_ms,
            start,
            source: source.to_owned(),
            aggregate,
        }
    }

    #[test]
    fn a_checkpoint_survives_reopening_and_closed_windows_are_deleted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (a, b) = (tp("traffic", 0), tp("traffic", 1));
        {
            let store = StateStore::open(dir.path(), false).expect("opens");
            assert_eq!(store.load(&a, 60_000).expect("loads"), None);
            store
                .write(&[
                    update(
                        &a,
                        10,
                        130_000,
                        i64::MIN,
                        vec![
                            (0, "s1".into(), agg(1, 0)),
                            (60_000, "s1".into(), agg(2, 3)),
                            (120_000, "s2".into(), agg(3, 5)),
                        ],
                    ),
                    update(&b, 4, 1, i64::MIN, vec![(0, "s9".into(), agg(4, 0))]),
                ])
                .expect("writes");
            // The next checkpoint closes [0, 60s) and updates a later window.
            store
                .write(&[update(
                    &a,
                    20,
                    135_000,
                    60_000,
                    vec![(120_000, "s2".into(), agg(5, 5))],
                )])
                .expect("writes");
        }
        let store = StateStore::open(dir.path(), false).expect("reopens");
        let (checkpoint, windows) = store.load(&a, 60_000).expect("loads").expect("has state");
        assert_eq!(
            checkpoint,
            PartitionCheckpoint {
                next_offset: 20,
                stream_time: Some(135_000),
                generation: Generation(3),
            }
        );
        assert_eq!(
            windows,
            vec![
                stored(60_000, 60_000, "s1", agg(2, 3)),
                stored(60_000, 120_000, "s2", agg(5, 5))
            ]
        );
        let (_, windows_b) = store.load(&b, 60_000).expect("loads").expect("has state");
        assert_eq!(
            windows_b,
            vec![stored(60_000, 0, "s9", agg(4, 0))],
            "other partitions untouched"
        );

        let stats = store.stats();
        assert!(stats.keys > 0 && stats.bytes > 0, "{stats:?}");

        store.forget(&a).expect("forgets");
        assert_eq!(store.load(&a, 60_000).expect("loads"), None);
        assert!(store.load(&b, 60_000).expect("loads").is_some());
        drop(store);
        let families = DB::list_cf(&Options::default(), dir.path()).expect("lists");
        assert!(
            !families.iter().any(|f| f == ROLLUPS),
            "without rollups the store has the families versions without them open: {families:?}"
        );
    }

    #[test]
    fn rollup_windows_are_kept_per_size_and_their_family_stays_once_made() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = tp("traffic", 0);
        let five = 300_000;
        {
            let store = StateStore::open(dir.path(), true).expect("opens");
            let mut first = update(
                &a,
                10,
                400_000,
                i64::MIN,
                vec![(360_000, "s1".into(), agg(1, 9))],
            );
            first.levels.push(LevelUpdate {
                size_ms: five,
                closed_before: i64::MIN,
                changed: vec![
                    (0, "s1".into(), agg(7, 0)),
                    (300_000, "s1".into(), agg(2, 4)),
                ],
            });
            store.write(&[first]).expect("writes");
            // The 5-minute window [0, 5m) closes; the minute windows are untouched.
            let mut second = update(&a, 11, 320_000, 360_000, vec![]);
            second.levels.push(LevelUpdate {
                size_ms: five,
                closed_before: 300_000,
                changed: vec![],
            });
            store.write(&[second]).expect("writes");
        }
        // Opened without asking for rollups, the family is found and read.
        let store = StateStore::open(dir.path(), false).expect("reopens");
        let (_, windows) = store.load(&a, 60_000).expect("loads").expect("has state");
        assert_eq!(
            windows,
            vec![
                stored(60_000, 360_000, "s1", agg(1, 9)),
                stored(five, 300_000, "s1", agg(2, 4)),
            ]
        );
        store.forget(&a).expect("forgets");
        assert_eq!(store.load(&a, 60_000).expect("loads"), None);
        let mut again = update(&a, 12, 1, i64::MIN, vec![]);
        again.levels.push(LevelUpdate {
            size_ms: five,
            closed_before: i64::MIN,
            changed: vec![],
        });
        store.write(&[again]).expect("writes");
        let (_, windows) = store.load(&a, 60_000).expect("loads").expect("has state");
        assert!(windows.is_empty(), "forget dropped every size: {windows:?}");
    }

    #[test]
    fn the_instance_id_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = instance_id(dir.path()).expect("generated");
        assert_eq!(first.len(), 16);
        assert_eq!(instance_id(dir.path()).expect("kept"), first);
        let other = tempfile::tempdir().expect("temp dir");
        assert_ne!(instance_id(other.path()).expect("generated"), first);
    }

    #[test]
    fn an_unwritable_state_dir_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").expect("writes");
        let error = StateStore::open(&file.join("state"), false)
            .err()
            .expect("fails");
        assert!(
            error
                .to_string()
                .starts_with("cannot open the state store in "),
            "{error}"
        );
    }
}
