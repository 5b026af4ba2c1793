//! The poll loop's answer to a live-state question ([`crate::live::queries`]): per asked partition,
//! its open windows of the source if this instance owns it. Called between records, so it sees
//! every record before it applied in full and none after. A window that may be one part of a
//! window split by added partitions says so (`possibly_split`, [`super::split`]).

use super::Processor;
use crate::live::answer::{LiveWindow, OwnedPartition};
use crate::live::queries::{Query, Reply};

impl Processor {
    /// The open windows of `query.source` in each asked partition this instance owns.
    pub(crate) fn live_view(&self, query: &Query) -> Reply {
        query
            .partitions
            .iter()
            .map(|(topic, partition)| {
                let state = self.partitions.get(topic.as_str())?.get(partition)?;
                Some(OwnedPartition {
                    rebuilding: state.rebuilding(),
                    stream_time: state.windows.stream_time(),
                    windows: state
                        .windows
                        .windows_of(&query.source)
                        .into_iter()
                        .map(|(level, start, end, aggregate)| LiveWindow {
                            possibly_split: self.inputs.open_part(
                                topic,
                                *partition,
                                &query.source,
                                level,
                            ),
                            ..LiveWindow::open(&query.source, start, end, &aggregate)
                        })
                        .collect(),
                })
            })
            .collect()
    }
}
