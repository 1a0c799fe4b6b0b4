//! Figures: percentiles, the printed table, JSON and a hand-written SVG histogram, and the
//! process's own resource use from /proc/self.

use serde::Serialize;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    pub count: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

pub fn summarize(samples: &[Duration]) -> Summary {
    if samples.is_empty() {
        return Summary::default();
    }
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| ms[(((ms.len() as f64) * p).ceil() as usize).clamp(1, ms.len()) - 1];
    Summary {
        count: ms.len(),
        p50_ms: pct(0.50),
        p95_ms: pct(0.95),
        p99_ms: pct(0.99),
        max_ms: *ms.last().unwrap(),
        mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
    }
}

/// Peak RSS, current RSS, threads and CPU time of a process, from `/proc/<pid>`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ProcStats {
    pub vm_hwm_kib: u64,
    pub vm_rss_kib: u64,
    pub threads: u64,
    pub cpu_user_s: f64,
    pub cpu_system_s: f64,
}

impl ProcStats {
    pub fn cpu_s(&self) -> f64 {
        self.cpu_user_s + self.cpu_system_s
    }
}

/// This process (where the in-process scenarios run vdbi).
pub fn proc_stats() -> ProcStats {
    read_proc("self")
}

/// `pid` is a number or `self`.
pub fn read_proc(pid: &str) -> ProcStats {
    let mut s = ProcStats::default();
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        for line in status.lines() {
            let num = || {
                line.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            if line.starts_with("VmHWM:") {
                s.vm_hwm_kib = num();
            } else if line.starts_with("VmRSS:") {
                s.vm_rss_kib = num();
            } else if line.starts_with("Threads:") {
                s.threads = num();
            }
        }
    }
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            // SAFETY: sysconf is always safe to call.
            let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
            let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            s.cpu_user_s = get(11) / tck;
            s.cpu_system_s = get(12) / tck;
        }
    }
    s
}

/// The table rows for a phase's memory and CPU: RSS at its start, peak RSS at its end, CPU used.
pub fn resource_rows(phase: &str, before: &ProcStats, after: &ProcStats) -> Vec<(String, String)> {
    vec![
        (
            format!("RSS before {phase} / peak"),
            format!("{} KiB / {} KiB", before.vm_rss_kib, after.vm_hwm_kib),
        ),
        (
            format!("CPU during {phase} (user+sys)"),
            format!("{:.2}s", after.cpu_s() - before.cpu_s()),
        ),
    ]
}

/// vdbi's own time per admission, read from its `vdbi_admission_own_duration_seconds`
/// histogram (`result="allowed"`): the bucket upper bounds holding the p50 and p99, the mean.
#[derive(Debug, Clone, Serialize, Default)]
pub struct OwnTime {
    pub p50_le_ms: f64,
    pub p99_le_ms: f64,
    pub mean_ms: f64,
}

impl OwnTime {
    /// From a Prometheus text page; None when the daemon does not export the histogram.
    pub fn from_metrics(page: &str) -> Option<OwnTime> {
        histogram_from_text(
            page,
            "vdbi_admission_own_duration_seconds",
            "result=\"allowed\"",
        )
        .map(|(p50, p99, mean)| OwnTime {
            p50_le_ms: p50,
            p99_le_ms: p99,
            mean_ms: mean,
        })
    }

    pub fn row(own: &Option<OwnTime>) -> (String, String) {
        (
            "vdbi own time p50 / p99 (≤ bucket) / mean".into(),
            match own {
                Some(o) => format!(
                    "{:.3}ms / {:.3}ms / {:.3}ms",
                    o.p50_le_ms, o.p99_le_ms, o.mean_ms
                ),
                None => "n/a (not exported)".into(),
            },
        )
    }
}

/// Prints `rows` (label, value) as an aligned two-column table.
pub fn print_table(title: &str, rows: &[(String, String)]) {
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    println!("\n== {title}");
    for (k, v) in rows {
        println!("  {k:<w$}  {v}");
    }
}

pub fn summary_row(name: &str, s: &Summary) -> (String, String) {
    (
        name.to_string(),
        format!(
            "n={} p50={:.2}ms p95={:.2}ms p99={:.2}ms max={:.2}ms",
            s.count, s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms
        ),
    )
}

pub fn write_json<T: Serialize>(dir: &Path, name: &str, v: &T) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(v).unwrap())?;
    println!("wrote {}", path.display());
    Ok(())
}

/// A histogram of one or more latency series as SVG (log-free, 40 bins up to the p99.9).
pub fn write_svg(
    dir: &Path,
    name: &str,
    title: &str,
    series: &[(&str, &[Duration])],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    const W: f64 = 720.0;
    const H: f64 = 360.0;
    const L: f64 = 60.0;
    const B: f64 = 40.0;
    const BINS: usize = 40;
    let colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];
    let mut all: Vec<f64> = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|d| d.as_secs_f64() * 1e3))
        .collect();
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let hi = if all.is_empty() {
        1.0
    } else {
        all[((all.len() as f64 * 0.999) as usize).min(all.len() - 1)].max(0.001)
    };
    let counts: Vec<Vec<usize>> = series
        .iter()
        .map(|(_, s)| {
            let mut c = vec![0usize; BINS];
            for d in s.iter() {
                let v = d.as_secs_f64() * 1e3;
                let i = ((v / hi) * BINS as f64) as usize;
                c[i.min(BINS - 1)] += 1;
            }
            c
        })
        .collect();
    let maxc = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let pw = W - L - 20.0;
    let ph = H - B - 40.0;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{L}" y="20" font-size="14">{title}</text>
<line x1="{L}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black"/>
<line x1="{L}" y1="40" x2="{L}" y2="{y0}" stroke="black"/>
<text x="{xm}" y="{yl}" text-anchor="middle">latency (ms)</text>
<text x="{L}" y="{yt}" text-anchor="middle">0</text>
<text x="{x1}" y="{yt}" text-anchor="middle">{hi:.1}</text>
<text x="{xm}" y="{yt}" text-anchor="middle">{half:.1}</text>
<text x="{lx}" y="45" text-anchor="end">{maxc}</text>
"#,
        y0 = 40.0 + ph,
        x1 = L + pw,
        xm = L + pw / 2.0,
        yl = H - 5.0,
        yt = 40.0 + ph + 15.0,
        half = hi / 2.0,
        lx = L - 5.0,
    );
    let bw = pw / BINS as f64;
    let n = series.len().max(1) as f64;
    for (si, c) in counts.iter().enumerate() {
        let col = colors[si % colors.len()];
        for (i, &k) in c.iter().enumerate() {
            if k == 0 {
                continue;
            }
            let h = ph * k as f64 / maxc;
            svg.push_str(&format!(
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{col}" fill-opacity="0.7"/>
"#,
                L + i as f64 * bw + si as f64 * bw / n,
                40.0 + ph - h,
                bw / n,
                h
            ));
        }
        svg.push_str(&format!(
            r#"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{col}"/><text x="{:.1}" y="{:.1}">{}</text>
"#,
            W - 200.0,
            30.0 + si as f64 * 16.0,
            W - 185.0,
            39.0 + si as f64 * 16.0,
            series[si].0
        ));
    }
    svg.push_str("</svg>\n");
    let path = dir.join(format!("{name}.svg"));
    std::fs::write(&path, svg)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// One histogram series (the lines of `name` that contain `label`) of a Prometheus text page:
/// the bucket upper bounds (ms) holding its p50 and p99, and its mean (ms). None when the series
/// is absent or empty.
pub fn histogram_from_text(text: &str, name: &str, label: &str) -> Option<(f64, f64, f64)> {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    let (mut sum, mut count) = (None, None);
    for line in text.lines() {
        if line.starts_with('#') || !line.contains(label) {
            continue;
        }
        let (key, value) = line.rsplit_once(' ')?;
        let value: f64 = value.parse().ok()?;
        if key.starts_with(&format!("{name}_bucket{{")) {
            let le = key.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            buckets.push((le, value));
        } else if key.starts_with(&format!("{name}_sum{{")) {
            sum = Some(value);
        } else if key.starts_with(&format!("{name}_count{{")) {
            count = Some(value);
        }
    }
    let (sum, count) = (sum?, count?);
    if count == 0.0 {
        return None;
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    let at = |q: f64| {
        buckets
            .iter()
            .find(|(_, c)| *c >= q * count)
            .map(|(le, _)| le * 1e3)
            .unwrap_or(f64::INFINITY)
    };
    Some((at(0.5), at(0.99), sum / count * 1e3))
}

#[cfg(test)]
mod tests {
    use super::histogram_from_text;

    #[test]
    fn reads_quantile_bounds_and_mean_of_one_series() {
        let page = r#"# TYPE h histogram
h_bucket{mode="legacy",result="allowed",le="0.001"} 90
h_bucket{mode="legacy",result="allowed",le="0.002"} 99
h_bucket{mode="legacy",result="allowed",le="0.005"} 100
h_bucket{mode="legacy",result="allowed",le="+Inf"} 100
h_sum{mode="legacy",result="allowed"} 0.1
h_count{mode="legacy",result="allowed"} 100
h_bucket{mode="legacy",result="denied",le="0.001"} 0
h_count{mode="legacy",result="denied"} 3
"#;
        let (p50, p99, mean) = histogram_from_text(page, "h", "result=\"allowed\"").unwrap();
        assert_eq!(p50, 1.0);
        assert_eq!(p99, 2.0);
        assert!((mean - 1.0).abs() < 1e-9);
        assert!(histogram_from_text(page, "missing", "result=\"allowed\"").is_none());
    }
}
