//! A plain command-line program: it builds to a `wasi:cli/command` component instead of a
//! `sluice:function/handler` one, so deploying it must fail with a clear error.

fn main() {
    println!("this component exports wasi:cli/run, not a sluice handler");
}
