//! What a run is asked to do: which vaults, whether to write, and what started it.

/// Which vaults to reconcile, whether to write, and why.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// Only these vaults (by id or name); `None` for all configured.
    pub only: Option<Vec<String>>,
    pub dry_run: bool,
    /// What started the run (`timer`, `http`, `eventgrid`, `cli`), for the records.
    pub trigger: &'static str,
    /// Read every vault through ARM whatever the configuration says: the Event Grid hook's
    /// runs, whose event is about a write Resource Graph's index may not show yet.
    pub read_through_arm: bool,
}

impl Default for RunRequest {
    fn default() -> Self {
        RunRequest {
            only: None,
            dry_run: false,
            trigger: "cli",
            read_through_arm: false,
        }
    }
}
