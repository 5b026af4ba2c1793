//! Idle closing (`idle_close_after`): a partition that has received nothing for that long, and has
//! nothing left to fetch, has its stream time advanced by wall clock so its last windows close.

use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::topic_partition_list::TopicPartitionList;

use super::{PipelineError, Processor};
use crate::kafka;

impl Processor {
    /// With `idle_close_after`: advances the stream time of partitions that received nothing for that
    /// long *and have nothing left to fetch* by the wall-clock time since their last record, and emits
    /// the windows that closes. A partition whose records are waiting (behind another partition's
    /// backlog, or behind a slow fetch) is not idle: closing it would turn on-time events into late
    /// ones.
    pub(crate) fn close_idle<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        now: Instant,
    ) -> Result<(), PipelineError> {
        let Some(idle_after) = self.settings.idle_close_after else {
            return Ok(());
        };
        let mut positions = None;
        let mut closed_by_idleness = Vec::new();
        for (topic, parts) in self.partitions.iter_mut() {
            for (&partition, state) in parts.iter_mut() {
                let idle = now.saturating_duration_since(state.last_record);
                let (Some(stream_time), Some(next)) =
                    (state.windows.stream_time(), state.next_offset)
                else {
                    continue;
                };
                if idle < idle_after || state.rebuilding() {
                    continue;
                }
                // librdkafka's position also steps over transaction markers, which `next` does not.
                let position = positions
                    .get_or_insert_with(|| consumer.position().ok())
                    .as_ref()
                    .and_then(|p: &TopicPartitionList| p.find_partition(topic, partition))
                    .and_then(|e| e.offset().to_raw())
                    .filter(|&o| o >= 0);
                let high_watermark =
                    kafka::admin::cached_high_watermark(consumer, topic, partition);
                if !nothing_left_to_fetch(next, position, high_watermark) {
                    continue;
                }
                // Never beyond what a record could set: a commit past it would not be ours.
                let advanced = stream_time
                    .saturating_add(i64::try_from(idle.as_millis()).unwrap_or(i64::MAX))
                    .min(self.settings.window.latest_time().max(stream_time));
                state.windows.advance_stream_time(advanced);
                state.last_record = now;
                let closed = state.windows.close_due();
                state.changed |= !closed.is_empty();
                closed_by_idleness.push((topic.clone(), partition, closed));
            }
        }
        for (topic, partition, closed) in closed_by_idleness {
            self.emit(&topic, partition, closed)?;
        }
        Ok(())
    }
}

/// Whether a partition consumed up to `next` (librdkafka's `position`, if known, may be further:
/// it steps over transaction markers) has nothing left to fetch, as far as the last fetch response
/// (`high_watermark`) says. Unknown watermark: it cannot be known to be idle.
fn nothing_left_to_fetch(next: i64, position: Option<i64>, high_watermark: Option<i64>) -> bool {
    high_watermark.is_some_and(|high| next.max(position.unwrap_or(next)) >= high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_is_idle_only_when_the_last_fetch_says_nothing_is_left() {
        let cases = [
            ("caught up", 10, None, Some(10), true),
            (
                "records waiting behind a backlog or a slow fetch",
                10,
                None,
                Some(25),
                false,
            ),
            ("watermark not known yet", 10, None, None, false),
            (
                "a transaction marker at the end, stepped over by the position",
                10,
                Some(11),
                Some(11),
                true,
            ),
            (
                "position behind what was processed is not trusted",
                10,
                Some(3),
                Some(10),
                true,
            ),
        ];
        for (name, next, position, high, idle) in cases {
            assert_eq!(nothing_left_to_fetch(next, position, high), idle, "{name}");
        }
    }
}
