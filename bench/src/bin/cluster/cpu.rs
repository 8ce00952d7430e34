//! CPU time spent in each process of the benchmark (Linux; other systems print no CPU
//! figures).

use granary_bench::sys::cpu_ticks;

/// Processes whose CPU time is tracked: this one, the slave, the master.
#[derive(Clone, Copy)]
pub(crate) struct Pids {
    pub(crate) client: u32,
    pub(crate) slave: u32,
    pub(crate) master: u32,
}

/// CPU ticks of the three processes at one instant.
#[derive(Clone, Copy, Default)]
pub(crate) struct Cpu([u64; 3]);

impl Cpu {
    pub(crate) fn now(pids: Pids) -> Cpu {
        let t = |pid| cpu_ticks(pid).unwrap_or(0);
        Cpu([t(pids.client), t(pids.slave), t(pids.master)])
    }

    pub(crate) fn since(self, before: Cpu) -> Cpu {
        Cpu([0, 1, 2].map(|i| self.0[i].saturating_sub(before.0[i])))
    }

    pub(crate) fn add(&mut self, other: Cpu) {
        for i in 0..3 {
            self.0[i] += other.0[i];
        }
    }

    /// CPU microseconds per operation in each process: "client/slave/master".
    pub(crate) fn per_op(self, ops: usize, ticks_per_s: f64) -> String {
        if ops == 0 || self.0 == [0; 3] {
            return "-".to_owned();
        }
        let us = |t: u64| t as f64 / ticks_per_s * 1e6 / ops as f64;
        format!(
            "{:.1}/{:.1}/{:.1}",
            us(self.0[0]),
            us(self.0[1]),
            us(self.0[2])
        )
    }
}
