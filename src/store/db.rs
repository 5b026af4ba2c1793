//! The RocksDB database of the state store: per input partition, the open windows' aggregates and
//! the checkpoint they correspond to, always written together in one atomic `WriteBatch`; and the
//! instance id kept beside them.
use std::path::Path;

use rocksdb::{
    ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions, DB,
};

use smol_str::SmolStr;

use super::layout::{
    decode_aggregate, decode_checkpoint, decode_window_suffix, encode_aggregate,
    encode_aggregate_with, encode_checkpoint, partition_key, window_key,
};
use crate::checkpoint::{PartitionCheckpoint, TopicPartition};
use crate::window::Aggregate;

const WINDOWS: &str = "windows";
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
}

impl Recorded {
    fn key(self) -> &'static [u8] {
        match self {
            Recorded::Semantics => b"semantics",
            Recorded::Group => b"group",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Recorded::Semantics => "settings",
            Recorded::Group => "group",
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
}

/// What a checkpoint writes for one partition.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionUpdate {
    pub partition: TopicPartition,
    pub checkpoint: PartitionCheckpoint,
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
}

impl StateStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let open_error = |cause: String| StoreError::Open {
            dir: dir.display().to_string(),
            cause,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_error(e.to_string()))?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
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
        let families = [
            ColumnFamilyDescriptor::new(WINDOWS, family.clone()),
            ColumnFamilyDescriptor::new(PARTITIONS, family),
        ];
        let db = DB::open_cf_descriptors(&options, dir, families)
            .map_err(|e| open_error(e.into_string()))?;
        Ok(StateStore { db })
    }

    fn family(&self, name: &str) -> &rocksdb::ColumnFamily {
        // Both families are created by `open`, so they always exist.
        self.db
            .cf_handle(name)
            .unwrap_or_else(|| unreachable!("column family {name} is created by open"))
    }

    /// The stored checkpoint and open windows of `partition`, if it has any.
    #[allow(clippy::type_complexity)]
    pub fn load(
        &self,
        partition: &TopicPartition,
    ) -> Result<Option<(PartitionCheckpoint, Vec<(i64, String, Aggregate)>)>, StoreError> {
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
            let aggregate = decode_aggregate(&value).ok_or(StoreError::Corrupt {
                what: "window aggregate",
            })?;
            windows.push((start, source, aggregate));
        }
        Ok(Some((checkpoint, windows)))
    }

    /// Writes every update in one atomic, synced batch.
    pub fn write(&self, updates: &[PartitionUpdate]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let (windows, partitions) = (self.family(WINDOWS), self.family(PARTITIONS));
        for update in updates {
            let key = partition_key(&update.partition);
            batch.delete_range_cf(
                windows,
                window_key(&key, i64::MIN, ""),
                window_key(&key, update.closed_before, ""),
            );
            for (start, source, aggregate) in &update.changed {
                let window = window_key(&key, *start, source);
                match &aggregate.sketch {
                    None => batch.put_cf(windows, window, encode_aggregate(aggregate)),
                    Some(sketch) => {
                        batch.put_cf(windows, window, encode_aggregate_with(aggregate, sketch))
                    }
                }
            }
            batch.put_cf(partitions, &key, encode_checkpoint(&update.checkpoint));
        }
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options)?;
        Ok(())
    }

    /// Estimated keys and bytes (SST files plus memtables) of the store, for the metrics; RocksDB's
    /// own estimates, cheap to read.
    pub fn stats(&self) -> StoreStats {
        let mut stats = StoreStats::default();
        for family in [WINDOWS, PARTITIONS] {
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
        batch.delete_cf(self.family(PARTITIONS), &key);
        self.db.write(batch)?;
        Ok(())
    }
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

    #[test]
    fn a_checkpoint_survives_reopening_and_closed_windows_are_deleted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (a, b) = (tp("traffic", 0), tp("traffic", 1));
        {
            let store = StateStore::open(dir.path()).expect("opens");
            assert_eq!(store.load(&a).expect("loads"), None);
            store
                .write(&[
                    PartitionUpdate {
                        partition: a.clone(),
                        checkpoint: PartitionCheckpoint {
                            next_offset: 10,
                            stream_time: Some(130_000),
                            generation: Generation(3),
                        },
                        closed_before: i64::MIN,
                        changed: vec![
                            (0, "s1".into(), agg(1, 0)),
                            (60_000, "s1".into(), agg(2, 3)),
                            (120_000, "s2".into(), agg(3, 5)),
                        ],
                    },
                    PartitionUpdate {
                        partition: b.clone(),
                        checkpoint: PartitionCheckpoint {
                            next_offset: 4,
                            stream_time: Some(1),
                            generation: Generation(3),
                        },
                        closed_before: i64::MIN,
                        changed: vec![(0, "s9".into(), agg(4, 0))],
                    },
                ])
                .expect("writes");
            // The next checkpoint closes [0, 60s) and updates a later window.
            store
                .write(&[PartitionUpdate {
                    partition: a.clone(),
                    checkpoint: PartitionCheckpoint {
                        next_offset: 20,
                        stream_time: Some(135_000),
                        generation: Generation(3),
                    },
                    closed_before: 60_000,
                    changed: vec![(120_000, "s2".into(), agg(5, 5))],
                }])
                .expect("writes");
        }
        let store = StateStore::open(dir.path()).expect("reopens");
        let (checkpoint, windows) = store.load(&a).expect("loads").expect("has state");
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
                (60_000, "s1".into(), agg(2, 3)),
                (120_000, "s2".into(), agg(5, 5))
            ]
        );
        let (_, windows_b) = store.load(&b).expect("loads").expect("has state");
        assert_eq!(
            windows_b,
            vec![(0, "s9".into(), agg(4, 0))],
            "other partitions untouched"
        );

        let stats = store.stats();
        assert!(stats.keys > 0 && stats.bytes > 0, "{stats:?}");

        store.forget(&a).expect("forgets");
        assert_eq!(store.load(&a).expect("loads"), None);
        assert!(store.load(&b).expect("loads").is_some());
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
        let error = StateStore::open(&file.join("state")).err().expect("fails");
        assert!(
            error
                .to_string()
                .starts_with("cannot open the state store in "),
            "{error}"
        );
    }
}
