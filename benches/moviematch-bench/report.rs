//! Results: the table on stdout, a CSV, and an optional SVG of the latencies.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// Throughput and latency of one measured run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub ops_per_sec: f64,
    pub p50_us: u32,
    pub p99_us: u32,
    /// The server's CPU time per request (all its threads), in microseconds.
    pub server_us: f64,
    /// The client's (this process's) CPU time per request, in microseconds.
    pub client_us: f64,
    /// Of `server_us`, the CPU of the Redis behind a daemon with `storageType: redis`.
    pub behind_us: Option<f64>,
    pub requests: usize,
}

impl Stats {
    pub fn from_latencies(mut latencies: Vec<u32>, elapsed: Duration) -> Stats {
        latencies.sort_unstable();
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or(0)
        };
        Stats {
            ops_per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
            p50_us: at(0.50),
            p99_us: at(0.99),
            server_us: 0.0,
            client_us: 0.0,
            behind_us: None,
            requests: latencies.len(),
        }
    }

    /// Spreads the CPU seconds each side used over the requests measured.
    pub fn set_cpu(&mut self, server_seconds: f64, client_seconds: f64) {
        let requests = self.requests.max(1) as f64;
        self.server_us = server_seconds * 1e6 / requests;
        self.client_us = client_seconds * 1e6 / requests;
    }

    /// Notes how much of the server's CPU the Redis behind it used.
    pub fn set_behind(&mut self, behind_seconds: f64) {
        self.behind_us = Some(behind_seconds * 1e6 / self.requests.max(1) as f64);
    }

    /// The CPU column: server / client, with the Redis behind the server when there is one.
    fn cpu(&self) -> String {
        match self.behind_us {
            Some(behind) => format!(
                "{:.1} (Redis {behind:.1}) / {:.1}",
                self.server_us, self.client_us
            ),
            None => format!("{:.1} / {:.1}", self.server_us, self.client_us),
        }
    }
}

/// One line of the table.
pub struct Row {
    pub what: String,
    pub note: String,
    pub clients: usize,
    pub depth: usize,
    /// Threads of the benchmark's client runtime (throughput rows; 0 for the others).
    pub client_threads: usize,
    pub ours: Stats,
    pub redis: Option<Stats>,
    /// For rows that are a single number each (memory, start-up, stop): ours, Redis.
    pub values: Option<(f64, f64)>,
}

impl Row {
    pub fn throughput(
        what: &str,
        note: &str,
        clients: usize,
        depth: usize,
        ours: Stats,
        redis: Stats,
    ) -> Row {
        Row {
            what: what.into(),
            note: note.into(),
            clients,
            depth,
            client_threads: 0,
            ours,
            redis: Some(redis),
            values: None,
        }
    }

    /// A row of one number each where lower is better (MiB, ms, us).
    pub fn single(what: &str, ours: f64, redis: f64) -> Row {
        Row {
            what: what.into(),
            note: String::new(),
            clients: 0,
            depth: 0,
            client_threads: 0,
            ours: Stats::default(),
            redis: None,
            values: Some((ours, redis)),
        }
    }

    pub fn latency(what: &str, ours: Stats) -> Row {
        Row {
            what: what.into(),
            note: String::new(),
            clients: 1,
            depth: 1,
            client_threads: 0,
            ours,
            redis: None,
            values: None,
        }
    }

    /// Ours / Redis, so that above 1.0 is better for us (for single numbers, Redis / ours).
    fn ratio(&self) -> Option<f64> {
        match (self.redis, self.values) {
            (Some(redis), _) if redis.ops_per_sec > 0.0 => {
                Some(self.ours.ops_per_sec / redis.ops_per_sec)
            }
            (_, Some((ours, redis))) if ours > 0.0 => Some(redis / ours),
            _ => None,
        }
    }
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Stamped on the throughput rows pushed while it is set.
    pub client_threads: usize,
    /// Checks that failed: printed after the table, and the run exits 1.
    pub failures: Vec<String>,
}

fn ms(us: u32) -> String {
    format!("{:.2}", f64::from(us) / 1000.0)
}

impl Report {
    /// A check failed: the run goes on (the other rows still count) but ends in failure.
    pub fn fail(&mut self, what: String) {
        eprintln!("  FAILED: {what}");
        self.failures.push(what);
    }

    pub fn push(&mut self, mut row: Row) {
        eprintln!(
            "  measured: {} {} c={} d={}",
            row.what, row.note, row.clients, row.depth
        );
        if row.redis.is_some() {
            row.client_threads = self.client_threads;
        }
        self.rows.push(row);
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let mut threads: Vec<usize> = self
            .rows
            .iter()
            .filter(|r| r.redis.is_some())
            .map(|r| r.client_threads)
            .collect();
        threads.sort_unstable();
        threads.dedup();
        for threads in threads {
            let _ = writeln!(
                out,
                "\nClient on {threads} thread{} (CPU: microseconds per request, server / client):\n",
                if threads == 1 { "" } else { "s" }
            );
            let _ = writeln!(out, "| workload | mode | clients x depth | ours ops/s | p50 ms | p99 ms | CPU us | Redis ops/s | p50 ms | p99 ms | CPU us | ours/Redis |");
            let _ = writeln!(
                out,
                "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for row in self
                .rows
                .iter()
                .filter(|r| r.redis.is_some() && r.client_threads == threads)
            {
                let redis = row.redis.unwrap_or_default();
                let _ = writeln!(
                    out,
                    "| {} | {} | {} x {} | {:.0} | {} | {} | {} | {:.0} | {} | {} | {} | {:.2} |",
                    row.what,
                    row.note,
                    row.clients,
                    row.depth,
                    row.ours.ops_per_sec,
                    ms(row.ours.p50_us),
                    ms(row.ours.p99_us),
                    row.ours.cpu(),
                    redis.ops_per_sec,
                    ms(redis.p50_us),
                    ms(redis.p99_us),
                    redis.cpu(),
                    row.ratio().unwrap_or(0.0)
                );
            }
        }
        if self.rows.iter().any(|r| r.values.is_some()) {
            let _ = writeln!(
                out,
                "\n| measure (lower is better) | ours | Redis | Redis/ours |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|");
        }
        for row in self.rows.iter().filter(|r| r.values.is_some()) {
            let (ours, redis) = row.values.unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} | {ours:.1} | {redis:.1} | {:.2} |",
                row.what,
                row.ratio().unwrap_or(0.0)
            );
        }
        for row in self
            .rows
            .iter()
            .filter(|r| r.redis.is_none() && r.values.is_none())
        {
            let _ = writeln!(
                out,
                "\n{}: p50 {} ms, p99 {} ms",
                row.what,
                ms(row.ours.p50_us),
                ms(row.ours.p99_us)
            );
        }
        out
    }

    pub fn write_csv(&self, path: &Path) -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = String::from("workload,mode,client_threads,clients,depth,ours_ops,ours_p50_us,ours_p99_us,ours_server_cpu_us,ours_client_cpu_us,redis_ops,redis_p50_us,redis_p99_us,redis_server_cpu_us,redis_client_cpu_us,ours_value,redis_value,ratio,ours_redis_behind_cpu_us\n");
        for row in &self.rows {
            let redis = row.redis.unwrap_or_default();
            let (ov, rv) = row.values.unwrap_or_default();
            let _ = writeln!(
                out,
                "\"{}\",\"{}\",{},{},{},{:.1},{},{},{:.2},{:.2},{:.1},{},{},{:.2},{:.2},{:.3},{:.3},{:.3},{}",
                row.what,
                row.note,
                row.client_threads,
                row.clients,
                row.depth,
                row.ours.ops_per_sec,
                row.ours.p50_us,
                row.ours.p99_us,
                row.ours.server_us,
                row.ours.client_us,
                redis.ops_per_sec,
                redis.p50_us,
                redis.p99_us,
                redis.server_us,
                redis.client_us,
                ov,
                rv,
                row.ratio().unwrap_or(0.0),
                row.ours
                    .behind_us
                    .map_or(String::new(), |b| format!("{b:.2}"))
            );
        }
        std::fs::write(path, out)
    }

    /// Horizontal bars of p50 (solid) and p99 (light) latency per workload, ours above Redis,
    /// on a log scale so 0.05 ms and 50 ms fit one chart.
    pub fn write_svg(&self, path: &Path) -> std::io::Result<()> {
        let rows: Vec<&Row> = self.rows.iter().filter(|r| r.redis.is_some()).collect();
        let (left, width, bar, gap) = (430.0, 500.0, 9.0, 8.0);
        let height = 40.0 + rows.len() as f64 * (2.0 * bar + gap);
        let x = |us: u32| -> f64 { (f64::from(us.max(1)).log10() / 6.0 * width).clamp(1.0, width) };
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"10\">\n",
            left + width + 20.0
        );
        let _ = writeln!(svg, "<text x=\"4\" y=\"14\">latency, log scale 1 µs - 1 s: ours (blue), Redis (red); p50 solid, p99 light</text>");
        for (i, row) in rows.iter().enumerate() {
            let y = 30.0 + i as f64 * (2.0 * bar + gap);
            let label = format!(
                "{} {} {}x{} ({}t)",
                row.what, row.note, row.clients, row.depth, row.client_threads
            );
            let _ = writeln!(
                svg,
                "<text x=\"4\" y=\"{}\">{}</text>",
                y + bar + 3.0,
                label.replace('&', "&amp;").replace('<', "&lt;")
            );
            for (k, (stats, color)) in [
                (row.ours, "#2563eb"),
                (row.redis.unwrap_or_default(), "#dc2626"),
            ]
            .iter()
            .enumerate()
            {
                let yy = y + k as f64 * bar;
                let _ = writeln!(svg, "<rect x=\"{left}\" y=\"{yy}\" width=\"{:.1}\" height=\"{}\" fill=\"{color}\" opacity=\"0.3\"/>", x(stats.p99_us), bar - 1.0);
                let _ = writeln!(svg, "<rect x=\"{left}\" y=\"{yy}\" width=\"{:.1}\" height=\"{}\" fill=\"{color}\"/>", x(stats.p50_us), bar - 1.0);
            }
        }
        svg.push_str("</svg>\n");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, svg)
    }
}
