//! The `events` interface: the batch stays in host memory; bodies are parsed on the host
//! by `to-frame`, and copied into the guest only by an explicit `body` call.

use sluice_frame::Frame;
use sluice_frame::ingest::{ReadOptions, read_json_lines};
use wasmtime::component::Resource;

use crate::batch::{EventMeta, SharedBatch, TriggerKind};
use crate::bindings::GuestError;
use crate::bindings::sluice::function::events::{self, CronMeta, FileMeta, Format, HttpMeta, KafkaMeta};
use crate::state::InvocationState;

impl events::Host for InvocationState {}

impl From<EventMeta> for events::EventMeta {
    fn from(meta: EventMeta) -> events::EventMeta {
        match meta {
            EventMeta::File { path, line } => events::EventMeta::File(FileMeta { path, line }),
            EventMeta::Http { method, path, headers } => events::EventMeta::Http(HttpMeta { method, path, headers }),
            EventMeta::Kafka { topic, partition, offset, key } => {
                events::EventMeta::Kafka(KafkaMeta { topic, partition, offset, key })
            }
            EventMeta::Cron { scheduled_ms } => events::EventMeta::Cron(CronMeta { scheduled_ms }),
        }
    }
}

impl events::HostBatch for InvocationState {
    fn len(&mut self, batch: Resource<SharedBatch>) -> wasmtime::Result<u32> {
        Ok(u32::try_from(self.table.get(&batch)?.len()).unwrap_or(u32::MAX))
    }

    fn trigger(&mut self, batch: Resource<SharedBatch>) -> wasmtime::Result<events::TriggerKind> {
        Ok(match self.table.get(&batch)?.trigger() {
            TriggerKind::File => events::TriggerKind::File,
            TriggerKind::Http => events::TriggerKind::Http,
            TriggerKind::Kafka => events::TriggerKind::Kafka,
            TriggerKind::Cron => events::TriggerKind::Cron,
        })
    }

    fn meta(&mut self, batch: Resource<SharedBatch>, index: u32) -> wasmtime::Result<Option<events::EventMeta>> {
        Ok(self.table.get(&batch)?.meta(index as usize).map(Into::into))
    }

    fn body(&mut self, batch: Resource<SharedBatch>, index: u32) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.table.get(&batch)?.body(index as usize).map(<[u8]>::to_vec))
    }

    fn to_frame(
        &mut self,
        batch: Resource<SharedBatch>,
        format: Format,
        options: events::ReadOptions,
    ) -> wasmtime::Result<Result<Resource<Frame>, GuestError>> {
        match format {
            Format::JsonLines => {}
        }
        let batch = self.table.get(&batch)?.clone();
        let read_options = ReadOptions {
            fields: options.fields,
            schema: options.schema.into_iter().map(|(name, dtype)| (name, dtype.into())).collect(),
            bad_lines: batch.bad_line_policy(),
        };
        let result = read_json_lines(&batch.json_sources(), &read_options);
        match result {
            Ok(ingested) => {
                if !ingested.bad_lines.is_empty() {
                    tracing::warn!(
                        function = %self.function.name,
                        skipped = ingested.bad_lines.len(),
                        "skipped malformed lines; they go to the dead-letter file"
                    );
                }
                self.bad_lines.extend(ingested.bad_lines);
                self.rows_parsed += ingested.frame.num_rows() as u64;
                self.push_frame(Ok(ingested.frame))
            }
            Err(error) => self.push_frame(Err(error)),
        }
    }

    fn drop(&mut self, batch: Resource<SharedBatch>) -> wasmtime::Result<()> {
        self.table.delete(batch)?;
        Ok(())
    }
}
