//! JSON-lines ingest on arbitrary bytes, inferred and declared, fail and skip policies, eager
//! and through the lazy streaming scan: it must never panic, and every failure must be a parse
//! error naming the input and a line that exists.
#![no_main]

use std::ops::Range;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use sluice_frame::{AggFn, BadLinePolicy, DType, Expr, FrameError, JsonSource, LazyFrame, ReadOptions, ScanInput, read_json_lines};

#[derive(Debug)]
struct Bytes(Vec<u8>);

impl ScanInput for Bytes {
    fn sources(&self) -> Vec<JsonSource<'_>> {
        vec![JsonSource { name: "fuzz", data: &self.0, first_line: 1 }]
    }

    fn consumed(&self, _index: usize, _range: Range<usize>) {}
}

fn check(result: Result<(), FrameError>, lines: u64) {
    match result {
        Ok(()) => {}
        Err(FrameError::Parse { input, line, .. }) => assert!(input == "fuzz" && (1..=lines).contains(&line), "{input} line {line}"),
        Err(FrameError::TypeMismatch(_) | FrameError::ColumnNotFound { .. }) => {}
        Err(other) => panic!("unexpected error: {other}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let lines = data.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    let declared = vec![("a".to_string(), DType::Float64), ("b.c".to_string(), DType::Utf8), ("t".to_string(), DType::TimestampMs)];
    for bad_lines in [BadLinePolicy::Fail, BadLinePolicy::Skip] {
        for schema in [Vec::new(), declared.clone()] {
            let options = ReadOptions { fields: None, schema, bad_lines };
            let source = [JsonSource { name: "fuzz", data, first_line: 1 }];
            check(read_json_lines(&source, &options).map(|_| ()), lines);
            let lazy = LazyFrame::scan(Arc::new(Bytes(data.to_vec())), options);
            let grouped = lazy.group_by(&["b.c".into()], &[Expr::col("a").aggregate(AggFn::Mean), Expr::CountRows]);
            check(grouped.and_then(|g| g.collect()).map(|_| ()), lines);
        }
    }
});
