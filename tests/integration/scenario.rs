//! The scenario every processor test is told in: topics for one purpose, a seeded dataset, a consumer
//! group, and a directory holding each instance's state; the dataset written at once or as live
//! traffic; instances started with the oracle's semantics (plus what the scenario sets); waiting until
//! the output holds every window the oracle expects; and holding the output, late and DLQ topics to
//! the oracle. Faults (kill -9, SIGSTOP, broker restarts) are the test's own lines between these.
//! Command lines are [`Flags`]: set and unset by name, never edited by position.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use streamagg::codec::Format;
use streamagg::reader::RawRecord;

use crate::common::{brokers, read_all, wait_for_records, ProcessorProcess, TestTopic};
use crate::dataset::{dataset, produce_input_range_gradually, produce_inputs, Input};
use crate::oracle::{assert_topics_match, oracle, Delivery, Expected, SEMANTICS_ARGS};

/// Consumer settings that make a dead member leave the group in seconds, not the default 45 s.
pub const FAST_FAILOVER: &str =
    "[kafka.consumer]\n\"session.timeout.ms\" = 6000\n\"heartbeat.interval.ms\" = 1000\n";

/// Command-line flags and their values, in the order first set (a flag set again replaces its value).
#[derive(Clone, Debug, Default)]
pub struct Flags(Vec<(String, String)>);

impl Flags {
    /// Flags from `(flag, value)` pairs.
    pub fn of(pairs: &[(&str, &str)]) -> Flags {
        let mut flags = Flags::default();
        for (flag, value) in pairs {
            flags.set(flag, value);
        }
        flags
    }

    /// Sets `flag` to `value`.
    pub fn set(&mut self, flag: &str, value: &str) -> &mut Self {
        match self.0.iter_mut().find(|(f, _)| f == flag) {
            Some((_, old)) => *old = value.to_owned(),
            None => self.0.push((flag.to_owned(), value.to_owned())),
        }
        self
    }

    /// Leaves `flag` out.
    pub fn unset(&mut self, flag: &str) -> &mut Self {
        self.0.retain(|(f, _)| f != flag);
        self
    }

    /// Every flag of `other` set here.
    pub fn extend(&mut self, other: &Flags) -> &mut Self {
        for (flag, value) in &other.0 {
            self.set(flag, value);
        }
        self
    }

    /// The command line: each flag followed by its value.
    pub fn args(&self) -> Vec<String> {
        self.0
            .iter()
            .flat_map(|(flag, value)| [flag.clone(), value.clone()])
            .collect()
    }
}

/// The processor flags that give it the oracle's semantics ([`SEMANTICS_ARGS`]).
pub fn semantics() -> Flags {
    let mut flags = Flags::default();
    for pair in SEMANTICS_ARGS.chunks(2) {
        flags.set(pair[0], pair[1]);
    }
    flags
}

pub struct Scenario {
    pub format: Format,
    pub topics: Topics,
    pub inputs: Arc<Vec<Input>>,
    pub group: String,
    pub dir: tempfile::TempDir,
    /// Every instance's flags.
    pub flags: Flags,
}

impl Scenario {
    /// Topics named for `purpose` with `partitions` partitions, the dataset of `events` events seeded
    /// by `seed` (nothing written yet), and a group no other test uses.
    pub fn new(purpose: &str, format: Format, partitions: i32, seed: u64, events: i64) -> Scenario {
        Scenario::with_inputs(purpose, format, partitions, dataset(format, seed, events))
    }

    /// [`Scenario::new`] with a dataset of the test's own.
    pub fn with_inputs(
        purpose: &str,
        format: Format,
        partitions: i32,
        inputs: Vec<Input>,
    ) -> Scenario {
        Scenario::with_topics(Topics::create(purpose, partitions), format, inputs)
    }

    /// [`Scenario::with_inputs`] on topics of the test's own (e.g. one with a small
    /// `max.message.bytes`: [`Topics::create_with`]).
    pub fn with_topics(topics: Topics, format: Format, inputs: Vec<Input>) -> Scenario {
        let name = format_name(format);
        let group = random_group();
        let mut flags = Flags::of(&[
            ("--brokers", &brokers()),
            ("--input", &topics.input.name),
            ("--output", &topics.output.name),
            ("--late-topic", &topics.late.name),
            ("--dlq-topic", &topics.dlq.name),
            ("--group", &group),
            ("--input-format", name),
            ("--output-format", name),
        ]);
        flags.extend(&semantics());
        Scenario {
            format,
            inputs: Arc::new(inputs),
            group,
            dir: tempfile::tempdir().expect("scenario dir"),
            flags,
            topics,
        }
    }

    /// Sets `flag` to `value` for every instance started from now on.
    pub fn set(&mut self, flag: &str, value: &str) -> &mut Self {
        self.flags.set(flag, value);
        self
    }

    /// Leaves `flag` out of every instance started from now on.
    pub fn unset(&mut self, flag: &str) -> &mut Self {
        self.flags.unset(flag);
        self
    }

    /// Replaces the dataset (its indices start at 0 again), e.g. for a topic created anew.
    pub fn replace_inputs(&mut self, inputs: Vec<Input>) -> &mut Self {
        self.inputs = Arc::new(inputs);
        self
    }

    /// Writes `toml` as a config file every instance reads.
    pub fn config(&mut self, toml: &str) -> &mut Self {
        let path = self.dir.path().join("scenario.toml");
        std::fs::write(&path, toml).expect("config written");
        let path = path.to_str().expect("utf8").to_owned();
        self.set("--config", &path)
    }

    /// All of the dataset.
    pub fn all(&self) -> Range<usize> {
        0..self.inputs.len()
    }

    /// Writes `inputs[range]` now, keyed by source, each with its index header.
    pub fn preload(&self, range: Range<usize>) {
        produce_inputs(&self.topics.input.name, &self.inputs, range);
    }

    /// Writes `inputs[range]` as live traffic: `chunks` pieces with `pause` between them.
    pub fn traffic(&self, range: Range<usize>, chunks: usize, pause: Duration) -> JoinHandle<()> {
        produce_input_range_gradually(
            self.topics.input.name.clone(),
            Arc::clone(&self.inputs),
            range,
            chunks,
            pause,
        )
    }

    /// The state directory of instance `instance`.
    pub fn state_dir(&self, instance: &str) -> String {
        self.dir
            .path()
            .join(instance)
            .to_str()
            .expect("utf8")
            .to_owned()
    }

    /// The command line of instance `instance` (its state in [`Self::state_dir`]).
    pub fn args(&self, instance: &str) -> Vec<String> {
        self.args_with(instance, &[])
    }

    /// [`Self::args`] with `changes` set for this one instance.
    pub fn args_with(&self, instance: &str, changes: &[(&str, &str)]) -> Vec<String> {
        let mut flags = self.flags.clone();
        flags.extend(&Flags::of(changes));
        flags.set("--state-dir", &self.state_dir(instance));
        flags.args()
    }

    /// Starts instance `instance` with `changes` set for it alone.
    pub fn start_with(&self, instance: &str, changes: &[(&str, &str)]) -> ProcessorProcess {
        ProcessorProcess::start(&self.args_with(instance, changes))
    }

    /// Starts instance `instance`.
    pub fn start(&self, instance: &str) -> ProcessorProcess {
        ProcessorProcess::start(&self.args(instance))
    }

    /// Starts instance `instance` and waits until it owns partitions.
    pub fn start_assigned(&self, instance: &str, deadline: Duration) -> ProcessorProcess {
        let mut process = self.start(instance);
        wait_until_assigned(&mut process, deadline);
        process
    }

    /// What the oracle expects of the dataset as it now sits in the input topic.
    pub fn expected(&self) -> Expected {
        oracle(
            self.format,
            &self.inputs,
            &read_all(&self.topics.input.name),
        )
    }

    /// Waits until the output holds every window the oracle expects (failing at once if one of
    /// `running` exits); returns the output as read.
    pub fn wait_for_all(
        &self,
        running: &mut [&mut ProcessorProcess],
        deadline: Duration,
    ) -> Vec<RawRecord> {
        let expected = self.expected().windows.len();
        wait_for_records(&self.topics.output.name, expected, deadline, || {
            check_alive(running)
        })
    }

    /// Holds `output` (as read), the late topic and the DLQ to the oracle.
    pub fn assert_matches(&self, delivery: Delivery, output: &[RawRecord]) {
        assert_topics_match(
            self.format,
            &self.topics,
            &self.expected(),
            delivery,
            output,
        );
    }
}

pub struct Topics {
    pub input: TestTopic,
    pub output: TestTopic,
    pub late: TestTopic,
    pub dlq: TestTopic,
}

impl Topics {
    pub fn create(purpose: &str, partitions: i32) -> Topics {
        Topics {
            input: TestTopic::create(&format!("{purpose}-in"), partitions),
            output: TestTopic::create(&format!("{purpose}-out"), partitions),
            late: TestTopic::create(&format!("{purpose}-late"), partitions),
            dlq: TestTopic::create(&format!("{purpose}-dlq"), partitions),
        }
    }

    /// [`Topics::create`] with the topic of `role` ("in", "out", "late" or "dlq") created with the
    /// topic configs `configs` (e.g. a small `max.message.bytes`).
    pub fn create_with(
        purpose: &str,
        partitions: i32,
        role: &str,
        configs: &[(&str, &str)],
    ) -> Topics {
        let topic = |name: &str| {
            let purpose = format!("{purpose}-{name}");
            match name == role {
                true => TestTopic::create_with_config(&purpose, partitions, configs),
                false => TestTopic::create(&purpose, partitions),
            }
        };
        Topics {
            input: topic("in"),
            output: topic("out"),
            late: topic("late"),
            dlq: topic("dlq"),
        }
    }
}

pub fn format_name(format: Format) -> &'static str {
    match format {
        Format::Json => "json",
        Format::Avro => "avro",
        Format::AvroConfluent => "avro-confluent",
    }
}

pub fn check_alive(processes: &mut [&mut ProcessorProcess]) {
    for p in processes.iter_mut() {
        if let Some(status) = p.exited() {
            panic!("processor exited early ({status}); log:\n{}", p.log());
        }
    }
}

/// Partitions (by number) a processor's log says it was assigned.
pub fn assigned_partitions(log: &str) -> BTreeSet<i32> {
    log.lines()
        .filter(|line| line.contains("assigned") && !line.contains("revoked"))
        .filter_map(|line| {
            line.split("partition=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Waits until the output topic holds at least `count` records, failing fast if `processor` exits;
/// then expects it alive and the count reached within `deadline`. Returns the output as read.
pub fn wait_for_output(
    processor: &mut ProcessorProcess,
    topics: &Topics,
    count: usize,
    deadline: Duration,
) -> Vec<RawRecord> {
    let output = crate::common::wait_for_records(&topics.output.name, count, deadline, || {
        check_alive(&mut [&mut *processor])
    });
    processor.assert_alive();
    assert!(
        output.len() >= count,
        "{} of {count} output records within {deadline:?}; log:\n{}",
        output.len(),
        processor.log()
    );
    output
}

/// Waits until a processor's log says it owns partitions, failing fast if it exits.
pub fn wait_until_assigned(process: &mut ProcessorProcess, deadline: Duration) {
    let started = std::time::Instant::now();
    while assigned_partitions(&process.log()).is_empty() {
        check_alive(&mut [&mut *process]);
        assert!(
            started.elapsed() < deadline,
            "no partitions within {deadline:?}; log:\n{}",
            process.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A consumer group name no other test uses.
pub fn random_group() -> String {
    format!("it-group-{:016x}", rand::random::<u64>())
}
