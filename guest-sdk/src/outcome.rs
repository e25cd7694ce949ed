use crate::error::Result;
use crate::frame::Frame;

pub use crate::bindings::sluice::function::types::{Outcome, Reply};

/// Content type of [`Outcome::json`] replies: one JSON object per line.
const JSON_LINES: &str = "application/x-ndjson";
const PLAIN_TEXT: &str = "text/plain; charset=utf-8";

impl Outcome {
    /// A single 200 reply whose body is `frame` as JSON lines.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// # fn run(summary: Frame) -> Result<Outcome> {
    /// Outcome::json(&summary.top_k(10, "cpu_mean")?)
    /// # }
    /// ```
    pub fn json(frame: &Frame) -> Result<Outcome> {
        Ok(Outcome::replies(vec![Reply::new(
            200,
            JSON_LINES,
            frame.to_json_lines()?,
        )]))
    }

    /// A single 200 plain-text reply.
    pub fn text(text: impl Into<String>) -> Outcome {
        Outcome::replies(vec![Reply::new(200, PLAIN_TEXT, text.into().into_bytes())])
    }

    /// No reply: the batch succeeded and there is nothing to answer.
    pub fn empty() -> Outcome {
        Outcome::replies(Vec::new())
    }

    /// One reply per HTTP event of the batch, in event order.
    pub fn replies(replies: Vec<Reply>) -> Outcome {
        Outcome { replies }
    }
}

impl Reply {
    pub fn new(status: u16, content_type: impl Into<String>, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            content_type: content_type.into(),
            body: body.into(),
        }
    }
}
