//! The stages of each strategy, in the order they ship.

/// The phases of a migration, in the only order they may ship. Each strategy has its own
/// ([`Stage::EXTRACT`], [`Stage::SWAP`]); comparing stages only means something within one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Stage {
    Expand,
    DualWrite,
    Backfill,
    ReadNew,
    WriteNew,
    Contract,
    Prepare,
    Move,
    Finalize,
}

impl Stage {
    /// An extract's stages.
    pub const EXTRACT: [Stage; 6] = [
        Stage::Expand,
        Stage::DualWrite,
        Stage::Backfill,
        Stage::ReadNew,
        Stage::WriteNew,
        Stage::Contract,
    ];

    /// A swap's stages.
    pub const SWAP: [Stage; 3] = [Stage::Prepare, Stage::Move, Stage::Finalize];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Expand => "expand",
            Stage::DualWrite => "dual_write",
            Stage::Backfill => "backfill",
            Stage::ReadNew => "read_new",
            Stage::WriteNew => "write_new",
            Stage::Contract => "contract",
            Stage::Prepare => "prepare",
            Stage::Move => "move",
            Stage::Finalize => "finalize",
        }
    }

    /// The stage named `text`, of whichever strategy.
    pub fn parse(text: &str) -> Option<Stage> {
        Stage::EXTRACT
            .into_iter()
            .chain(Stage::SWAP)
            .find(|s| s.as_str() == text)
    }

    /// The stages of the strategy this stage belongs to.
    pub fn strategy_stages(self) -> &'static [Stage] {
        if Stage::SWAP.contains(&self) {
            &Stage::SWAP
        } else {
            &Stage::EXTRACT
        }
    }

    /// 1-based position in its strategy's sequence.
    pub fn number(self) -> usize {
        let stages = self.strategy_stages();
        stages.iter().position(|s| *s == self).unwrap_or(0) + 1
    }

    /// The variant's name in Rust (`DualWrite`), as the derive writes it into the code it
    /// generates.
    pub fn variant_name(self) -> &'static str {
        match self {
            Stage::Expand => "Expand",
            Stage::DualWrite => "DualWrite",
            Stage::Backfill => "Backfill",
            Stage::ReadNew => "ReadNew",
            Stage::WriteNew => "WriteNew",
            Stage::Contract => "Contract",
            Stage::Prepare => "Prepare",
            Stage::Move => "Move",
            Stage::Finalize => "Finalize",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
