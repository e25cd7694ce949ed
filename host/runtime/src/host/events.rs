//! The `events` interface: the batch stays in host memory; bodies are parsed on the host
//! (lazily: `to-frame` returns a plan that the first materializing call executes), and copied
//! into the guest only by an explicit `body` call.

use std::sync::Arc;

use sluice_frame::LazyFrame;
use sluice_frame::ingest::ReadOptions;
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
    ) -> wasmtime::Result<Result<Resource<LazyFrame>, GuestError>> {
        match format {
            Format::JsonLines => {}
        }
        let batch = self.table.get(&batch)?.clone();
        let read_options = ReadOptions {
            fields: options.fields,
            schema: options.schema.into_iter().map(|(name, dtype)| (name, dtype.into())).collect(),
            bad_lines: batch.bad_line_policy(),
        };
        let frame = LazyFrame::scan_on(Arc::new(BatchScan(batch)), read_options, self.gpu.clone());
        self.scans.push(frame.clone());
        Ok(Ok(self.table.push(frame)?))
    }

    fn drop(&mut self, batch: Resource<SharedBatch>) -> wasmtime::Result<()> {
        self.table.delete(batch)?;
        Ok(())
    }
}

/// A batch as the input of a lazy scan; parsed ranges of mapped files are released.
#[derive(Debug)]
struct BatchScan(SharedBatch);

impl sluice_frame::ScanInput for BatchScan {
    fn sources(&self) -> Vec<sluice_frame::ingest::JsonSource<'_>> {
        self.0.json_sources()
    }

    fn consumed(&self, index: usize, range: std::ops::Range<usize>) {
        self.0.release(index, range);
    }
}
