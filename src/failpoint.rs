//! Failure injection, compiled in only with the `failpoints` feature (the tests turn it on).
//!
//! `failpoint!("run::marker-write")` marks a step of the run. A test names the steps to break
//! in the `FAILPOINTS` environment variable of a `nightshift` process (the `fail` crate's
//! syntax, e.g. `run::output-commit=1*off->return`), and the step then:
//! - `return`: fails with an error, as an I/O error at that step would;
//! - `return(exit)`: ends the process at once, as a SIGKILL would (no clean-up runs);
//! - `panic`: panics, as a bug would.
//!
//! Without the feature the macro expands to nothing.

/// Marks a step where the tests may inject a failure. The enclosing function returns
/// `anyhow::Result`.
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {
        fail::fail_point!($name, |arg: Option<String>| {
            $crate::failpoint::injected($name, arg.as_deref())
        })
    };
}

/// What an injected failure does (see the module doc).
pub fn injected<T>(name: &str, arg: Option<&str>) -> anyhow::Result<T> {
    if arg == Some("exit") {
        eprintln!("failpoint {name}: exiting as if killed");
        std::process::exit(137);
    }
    Err(anyhow::anyhow!("injected failure at {name}"))
}

/// Reads `FAILPOINTS` for this process; a no-op without the feature.
pub fn setup_from_env() {
    #[cfg(feature = "failpoints")]
    std::mem::forget(fail::FailScenario::setup());
}
