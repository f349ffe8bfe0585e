//! What `smartvm bench` prints: a table for people, or one JSON document (`--json`) whose
//! schema is stable: `{firecrackerVersion, bootPath, runs, rounds, order, scenarios: [{name, title,
//! n, mean, median, p95, min, max, ratioToRaw: {mean, median} | null, loadStart, loadEnd,
//! ownCpuMsPerVm | null, vmmCpuMsPerVm | null, rssKibPerLiveVm | null, samples: [ms, ...]}]}`,
//! times in milliseconds, load averages over one minute; `ownCpuMsPerVm` is the bench process's
//! own CPU time (smartvm's, or the raw driver's) per VM, `vmmCpuMsPerVm` the Firecracker
//! processes' (scenarios that wait for their exits), `rssKibPerLiveVm` the bench's resident
//! memory above its start per VM alive at once.

use serde::Serialize;

use super::stats::{summarize, Summary};

/// One measured scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Stable key (`boot.first-line.smartvm`).
    pub name: String,
    /// What was measured, for people.
    pub title: String,
    /// Milliseconds.
    pub samples: Vec<f64>,
    /// The key of the raw-Firecracker scenario this one is compared with.
    pub raw: Option<String>,
    /// Load average when the scenario began and ended.
    pub load: (Option<f64>, Option<f64>),
    /// This program's CPU milliseconds per VM.
    pub cpu_ms_per_vm: Option<f64>,
    /// The Firecracker processes' CPU milliseconds per VM (when they exit inside the scenario).
    pub vmm_cpu_ms_per_vm: Option<f64>,
    /// This program's resident KiB (above its start) per VM alive at once.
    pub rss_kib_per_vm: Option<f64>,
    /// Each Firecracker's proportional set size (`/proc/PID/smaps_rollup`), KiB, averaged over
    /// the VMs right after they started.
    pub pss_kib_per_vm: Option<f64>,
    /// The key of the scenario with raw Firecracker run with its API up (`--api-floor`).
    pub floor: Option<String>,
}

impl Scenario {
    /// This scenario, also compared with the API-floor scenario `floor`.
    pub fn with_floor(self, floor: &str) -> Self {
        Self { floor: Some(floor.into()), ..self }
    }
}

/// Ratio of two summaries' means and medians.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ratio {
    pub mean: f64,
    pub median: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ScenarioOut {
    name: String,
    title: String,
    #[serde(flatten)]
    summary: Summary,
    ratio_to_raw: Option<Ratio>,
    ratio_to_api_floor: Option<Ratio>,
    load_start: Option<f64>,
    load_end: Option<f64>,
    own_cpu_ms_per_vm: Option<f64>,
    vmm_cpu_ms_per_vm: Option<f64>,
    rss_kib_per_live_vm: Option<f64>,
    pss_kib_per_vm: Option<f64>,
    /// Every sample in the order taken, for analyses of one's own.
    samples: Vec<f64>,
}

/// The whole run.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub firecracker_version: String,
    pub boot_path: String,
    pub runs: u32,
    pub rounds: u32,
    /// The order of each one-VM pair: `alternating` (raw first) or `shuffled`.
    pub order: &'static str,
    #[serde(rename = "scenarios")]
    out: Vec<ScenarioOut>,
}

impl Report {
    /// A report of `scenarios` (those without samples are left out).
    pub fn new(
        firecracker_version: String,
        boot_path: String,
        runs: u32,
        rounds: u32,
        scenarios: Vec<Scenario>,
    ) -> Self {
        let find = |name: &str| scenarios.iter().find(|s| s.name == name).and_then(|s| summarize(&s.samples));
        let out = scenarios
            .iter()
            .filter_map(|s| {
                let summary = summarize(&s.samples)?;
                let ratio = |to: &Option<String>| {
                    let to = to.as_deref().and_then(find)?;
                    Some(Ratio { mean: summary.mean / to.mean, median: summary.median / to.median })
                };
                let (ratio_to_raw, ratio_to_api_floor) = (ratio(&s.raw), ratio(&s.floor));
                Some(ScenarioOut {
                    name: s.name.clone(),
                    title: s.title.clone(),
                    summary,
                    ratio_to_raw,
                    ratio_to_api_floor,
                    load_start: s.load.0,
                    load_end: s.load.1,
                    own_cpu_ms_per_vm: s.cpu_ms_per_vm,
                    vmm_cpu_ms_per_vm: s.vmm_cpu_ms_per_vm,
                    rss_kib_per_live_vm: s.rss_kib_per_vm,
                    pss_kib_per_vm: s.pss_kib_per_vm,
                    samples: s.samples.clone(),
                })
            })
            .collect();
        Self { firecracker_version, boot_path, runs, rounds, order: "alternating", out }
    }

    /// The JSON document.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// A Markdown table (the columns of the ratio to the API floor only when it was measured).
    pub fn table(&self) -> String {
        let load = |l: Option<f64>| l.map_or("-".into(), |l| format!("{l:.2}"));
        let ratio = |r: Option<Ratio>| r.map_or(" | ".into(), |r| format!("{:.3} | {:.3}", r.mean, r.median));
        let floors = self.out.iter().any(|s| s.ratio_to_api_floor.is_some());
        let (floor_head, floor_rule) =
            if floors { (" /api floor mean | /api floor median |", "---|---|") } else { ("", "") };
        let mut out = vec![
            format!(
                "smartvm bench: Firecracker {}, boot path {}, {} runs ({}), {} rounds at once",
                self.firecracker_version, self.boot_path, self.runs, self.order, self.rounds
            ),
            String::new(),
            format!(
                "| scenario | n | mean ms | median ms | p95 ms | min ms | max ms | /raw mean | /raw median |{floor_head} \
                 load start→end | own CPU ms/VM | VMM CPU ms/VM | RSS KiB/live VM | VMM PSS KiB/VM |"
            ),
            format!("|---|---|---|---|---|---|---|---|---|{floor_rule}---|---|---|---|---|"),
        ];
        for s in &self.out {
            let m = &s.summary;
            let to_floor = if floors { format!(" {} |", ratio(s.ratio_to_api_floor)) } else { String::new() };
            let cpu = s.own_cpu_ms_per_vm.map_or("".into(), |c| format!("{c:.3}"));
            let vmm = s.vmm_cpu_ms_per_vm.map_or("".into(), |c| format!("{c:.3}"));
            let rss = s.rss_kib_per_live_vm.map_or("".into(), |r| format!("{r:.0}"));
            let pss = s.pss_kib_per_vm.map_or("".into(), |r| format!("{r:.0}"));
            out.push(format!(
                "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |{to_floor} {}→{} | {cpu} | {vmm} | {rss} | {pss} |",
                s.title,
                m.n,
                m.mean,
                m.median,
                m.p95,
                m.min,
                m.max,
                ratio(s.ratio_to_raw),
                load(s.load_start),
                load(s.load_end)
            ));
        }
        out.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_compare_with_the_named_raw_scenario() {
        let s = |name: &str, samples: Vec<f64>, raw: Option<&str>| Scenario {
            name: name.into(),
            title: name.into(),
            samples,
            raw: raw.map(Into::into),
            load: (Some(1.0), Some(2.0)),
            cpu_ms_per_vm: raw.map(|_| 0.25),
            vmm_cpu_ms_per_vm: raw.map(|_| 4.5),
            rss_kib_per_vm: None,
            pss_kib_per_vm: None,
            floor: None,
        };
        let r = Report::new(
            "v1".into(),
            "ConfigFile".into(),
            2,
            1,
            vec![s("raw", vec![10.0, 10.0], None), s("sv", vec![11.0, 12.0], Some("raw")), s("empty", vec![], None)],
        );
        let doc: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        let scenarios = doc["scenarios"].as_array().unwrap();
        assert_eq!(scenarios.len(), 2, "scenarios without samples are left out");
        assert_eq!(scenarios[0]["ratioToRaw"], serde_json::Value::Null);
        assert_eq!(scenarios[1]["ratioToRaw"]["mean"], 1.15);
        assert_eq!(scenarios[1]["n"], 2);
        assert_eq!(scenarios[1]["loadStart"], 1.0);
        assert_eq!(doc["bootPath"], "ConfigFile");
        assert_eq!(doc["order"], "alternating");
        assert_eq!(scenarios[1]["ownCpuMsPerVm"], 0.25);
        assert_eq!(scenarios[0]["ownCpuMsPerVm"], serde_json::Value::Null);
        assert_eq!(scenarios[1]["vmmCpuMsPerVm"], 4.5);
        assert_eq!(scenarios[1]["rssKibPerLiveVm"], serde_json::Value::Null);
        assert_eq!(scenarios[1]["samples"], serde_json::json!([11.0, 12.0]));
        assert!(r.table().contains("| sv | 2 | 11.50 |"), "{}", r.table());
        assert!(r.table().contains("| 1.00→2.00 | 0.250 | 4.500 |  |"), "{}", r.table());
        assert!(!r.table().contains("api floor"), "no floor columns unless a floor was measured");
        assert_eq!(scenarios[1]["ratioToApiFloor"], serde_json::Value::Null);
    }

    #[test]
    fn the_api_floor_gets_a_ratio_and_columns_of_its_own() {
        let s = |name: &str, samples: Vec<f64>, raw: Option<&str>, floor: Option<&str>| Scenario {
            name: name.into(),
            title: name.into(),
            samples,
            raw: raw.map(Into::into),
            load: (None, None),
            cpu_ms_per_vm: None,
            vmm_cpu_ms_per_vm: None,
            rss_kib_per_vm: None,
            pss_kib_per_vm: None,
            floor: floor.map(Into::into),
        };
        let scenarios = vec![
            s("raw", vec![10.0, 10.0], None, None),
            s("sv", vec![11.0, 12.0], Some("raw"), Some("api")),
            s("api", vec![11.0, 11.0], Some("raw"), None),
        ];
        let r = Report::new("v1".into(), "ConfigFile".into(), 2, 1, scenarios);
        let doc: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        let sv = &doc["scenarios"][1];
        assert_eq!(sv["ratioToRaw"]["mean"], 1.15);
        let to_floor = sv["ratioToApiFloor"]["mean"].as_f64().unwrap();
        assert!((to_floor - 11.5 / 11.0).abs() < 1e-9, "{to_floor}");
        assert_eq!(doc["scenarios"][2]["ratioToRaw"]["mean"], 1.1);
        assert_eq!(doc["scenarios"][2]["ratioToApiFloor"], serde_json::Value::Null);
        let table = r.table();
        assert!(table.contains("| /raw mean | /raw median | /api floor mean | /api floor median |"), "{table}");
        assert!(
            table.contains("| sv | 2 | 11.50 | 11.00 | 12.00 | 11.00 | 12.00 | 1.150 | 1.100 | 1.045 | 1.000 |"),
            "{table}"
        );
        assert!(table.contains("| api | 2 | 11.00 | 11.00 | 11.00 | 11.00 | 11.00 | 1.100 | 1.100 |  |  |"), "{table}");
        let columns = |line: &str| line.matches('|').count();
        let lines: Vec<&str> = table.lines().skip(2).collect();
        assert!(lines.iter().all(|l| columns(l) == columns(lines[0])), "every row has the header's columns:\n{table}");
    }
}
