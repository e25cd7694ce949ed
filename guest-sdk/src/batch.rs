use crate::bindings::sluice::function::events::{self as wit, Format};
use crate::error::Result;
use crate::frame::{DType, Frame};

pub use crate::bindings::sluice::function::events::{
    CronMeta, EventMeta, FileMeta, HttpMeta, KafkaMeta, TriggerKind,
};

/// The events of one delivery, lent by the host for the duration of the handler call.
///
/// The bodies stay in host memory: [`Batch::json`] parses them there, and only [`Batch::body`]
/// copies one into the guest.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    events: &'a wit::Batch,
}

impl<'a> Batch<'a> {
    pub(crate) fn new(events: &'a wit::Batch) -> Self {
        Batch { events }
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kind of trigger that delivered the batch.
    pub fn trigger(&self) -> TriggerKind {
        self.events.trigger()
    }

    /// Where event `index` came from: file and line, HTTP request, Kafka record or cron time.
    pub fn meta(&self, index: usize) -> Option<EventMeta> {
        self.events.meta(u32::try_from(index).ok()?)
    }

    /// Copies the body of event `index` into the guest.
    pub fn body(&self, index: usize) -> Option<Vec<u8>> {
        self.events.body(u32::try_from(index).ok()?)
    }

    /// Parses every body as JSON lines, all fields, with inferred types.
    pub fn json(&self) -> Result<Frame> {
        self.json_with(ReadOptions::new())
    }

    /// Parses every body as JSON lines as `options` says.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// # fn run(batch: Batch) -> Result<()> {
    /// let events = batch.json_with(
    ///     ReadOptions::new()
    ///         .fields(["company", "latency"])
    ///         .schema([("latency", DType::Float64)]),
    /// )?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn json_with(&self, options: ReadOptions) -> Result<Frame> {
        let frame = self.events.to_frame(Format::JsonLines, &options.0)?;
        Ok(Frame(frame))
    }
}

/// How the host parses the bodies of a batch.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct ReadOptions(wit::ReadOptions);

impl ReadOptions {
    /// Every field, with types inferred from the data.
    pub fn new() -> Self {
        ReadOptions(wit::ReadOptions {
            fields: None,
            schema: Vec::new(),
        })
    }

    /// Parses only these fields; the host skips the rest of every object (projection pushdown).
    pub fn fields(mut self, fields: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.0.fields = Some(fields.into_iter().map(Into::into).collect());
        self
    }

    /// Declares column types, so that every batch yields the same schema whatever its values;
    /// columns not named here are inferred.
    pub fn schema(mut self, columns: impl IntoIterator<Item = (impl Into<String>, DType)>) -> Self {
        self.0.schema = columns
            .into_iter()
            .map(|(name, dtype)| (name.into(), dtype))
            .collect();
        self
    }
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions::new()
    }
}
