//! streamagg: per-minute event-time traffic averages from Apache Kafka.
//!
//! The modules follow the data: [`generate`] makes traffic and [`producer`] writes it to Kafka; [`pipeline`]
//! runs the processor — records are decoded by [`codec`] into [`model`] records, assigned to windows
//! by [`window`], kept in [`store`] with the offsets [`checkpoint`] decides on, and emitted by
//! [`sink`]. [`config`] validates the processor's settings, [`reader`] reads topics back ([`inspect`] shows
//! their records, [`replay`] re-injects a DLQ's), and
//! [`kafka`] is the shared edge to the cluster. [`reset`] plans `streamagg reset`. [`telemetry`] names the metrics and serves them with
//! the health probes. [`ingest`] is the gateway that turns TCP and HTTP traffic into input events.
//! See `ARCHITECTURE.md` for the whole map.
//!
//! The pure core (codecs, windows, the store's byte layout, config validation, checkpoint decisions)
//! builds without the `runtime` feature, i.e. without librdkafka and RocksDB: that is what `fuzz/`
//! links against.

pub mod auth;
pub mod checkpoint;
pub mod codec;
pub mod config;
pub mod generate;
pub mod ingest;
pub mod inspect;
#[cfg(feature = "runtime")]
pub mod kafka;
pub mod live;
pub mod model;
pub mod partitioner;
#[cfg(feature = "runtime")]
pub mod pipeline;
#[cfg(feature = "runtime")]
pub mod processor;
#[cfg(feature = "runtime")]
pub mod producer;
#[cfg(feature = "runtime")]
pub mod reader;
#[cfg(feature = "runtime")]
pub mod registry;
#[cfg(feature = "runtime")]
pub mod replay;
pub mod reset;
pub mod restart;
pub mod route;
#[cfg(feature = "runtime")]
pub mod sink;
pub mod store;
#[cfg(feature = "runtime")]
pub mod telemetry;
pub mod window;

/// The layering invariant of `ARCHITECTURE.md`, checked on the source: no two top-level modules
/// import each other, directly or through others (doc comments do not count).
#[cfg(test)]
mod layering {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// The top-level modules `path` (a file, or a directory read recursively) imports, under
    /// `module`'s name; test files are left out.
    fn imports(path: &Path, module: &str, into: &mut BTreeMap<String, BTreeSet<String>>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                imports(&entry.path(), module, into);
            }
            return;
        }
        if path.file_name().is_some_and(|n| n == "tests.rs") {
            return;
        }
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let deps = into.entry(module.to_owned()).or_default();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for used in line.split("crate::").skip(1) {
                let name: String = used
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    deps.insert(name);
                }
            }
        }
    }

    #[test]
    fn no_module_imports_one_that_imports_it_back() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut graph = BTreeMap::new();
        for entry in std::fs::read_dir(&src).expect("src").flatten() {
            let name = entry.file_name().to_string_lossy().replace(".rs", "");
            if name == "lib" || name == "main" {
                continue;
            }
            imports(&entry.path(), &name, &mut graph);
        }
        assert!(graph.len() > 10, "the modules were read: {graph:?}");
        for start in graph.keys() {
            let mut stack = vec![(start.clone(), vec![start.clone()])];
            let mut seen = BTreeSet::new();
            while let Some((module, path)) = stack.pop() {
                for next in graph.get(&module).into_iter().flatten() {
                    assert!(
                        next != start,
                        "an import cycle: {} → {next}",
                        path.join(" → ")
                    );
                    if seen.insert(next.clone()) {
                        let mut longer = path.clone();
                        longer.push(next.clone());
                        stack.push((next.clone(), longer));
                    }
                }
            }
        }
    }
}
