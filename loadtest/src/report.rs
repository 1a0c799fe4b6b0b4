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

/// Latency histograms of one or more series as SVG, plus their raw samples
/// (`<name>.samples.json`, for `loadtest compare`). See [`svg_panels`] for the plot itself.
pub fn write_svg(
    dir: &Path,
    name: &str,
    title: &str,
    series: &[(&str, &[Duration])],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let owned: Vec<Series> = series
        .iter()
        .map(|(label, s)| Series {
            label: label.to_string(),
            ms: s.iter().map(|d| d.as_secs_f64() * 1e3).collect(),
        })
        .collect();
    let samples = dir.join(format!("{name}.samples.json"));
    std::fs::write(&samples, serde_json::to_vec(&owned).unwrap())?;
    let svg = svg_panels(
        title,
        &[Panel {
            title: String::new(),
            series: owned,
        }],
    );
    let path = dir.join(format!("{name}.svg"));
    std::fs::write(&path, svg)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// One latency series: a label and its samples in milliseconds.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Series {
    pub label: String,
    pub ms: Vec<f64>,
}

/// One plot of a figure: its own title and series.
pub struct Panel {
    pub title: String,
    pub series: Vec<Series>,
}

const COLORS: [&str; 4] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];
const BINS_PER_DECADE: f64 = 12.0;

/// The n-th fraction percentile (nearest rank) of sorted samples.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[(((sorted.len() as f64) * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn fmt_ms(v: f64) -> String {
    let trim = |x: f64| {
        format!("{x:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    };
    if v >= 1000.0 {
        trim(v / 1000.0) + " s"
    } else if v >= 1.0 {
        trim(v) + " ms"
    } else {
        format!("{:.0} µs", v * 1000.0)
    }
}

/// Panels side by side, sharing one log-scale latency axis that spans every sample (the slowest
/// outlier gets its own bar instead of being piled into the last one) and one y axis: the share
/// of each series' requests per bin, so series of different sizes compare. Dashed lines mark each
/// series' p50 and p99.
pub fn svg_panels(title: &str, panels: &[Panel]) -> String {
    const PW: f64 = 620.0;
    const PH: f64 = 300.0;
    const L: f64 = 70.0;
    const TOP: f64 = 60.0;
    const GAP: f64 = 40.0;
    let all: Vec<f64> = panels
        .iter()
        .flat_map(|p| p.series.iter().flat_map(|s| s.ms.iter().copied()))
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let (lo, hi) = if all.is_empty() {
        (0.1, 10.0)
    } else {
        let min = all.iter().copied().fold(f64::INFINITY, f64::min);
        let max = all.iter().copied().fold(0.0, f64::max);
        (
            10f64.powf(min.log10().floor()),
            10f64
                .powf((max.log10() + 1e-9).ceil())
                .max(10f64.powf(min.log10().floor() + 1.0)),
        )
    };
    let (llo, lhi) = (lo.log10(), hi.log10());
    let bins = (((lhi - llo) * BINS_PER_DECADE).round() as usize).max(1);
    let x_of = |v: f64| (v.max(lo).log10() - llo) / (lhi - llo) * PW;
    let hist = |s: &Series| {
        let mut c = vec![0usize; bins];
        for v in s.ms.iter().filter(|v| v.is_finite()) {
            let i = ((v.max(lo).log10() - llo) * BINS_PER_DECADE) as usize;
            c[i.min(bins - 1)] += 1;
        }
        c.into_iter()
            .map(|k| 100.0 * k as f64 / s.ms.len().max(1) as f64)
            .collect::<Vec<f64>>()
    };
    let hists: Vec<Vec<Vec<f64>>> = panels
        .iter()
        .map(|p| p.series.iter().map(hist).collect())
        .collect();
    let ymax = hists
        .iter()
        .flatten()
        .flatten()
        .copied()
        .fold(0.0, f64::max);
    let ystep = [1.0, 2.0, 5.0, 10.0, 20.0, 25.0, 50.0]
        .into_iter()
        .find(|st| ymax / st <= 5.0)
        .unwrap_or(50.0);
    let ytop = ((ymax / ystep).ceil() * ystep).max(ystep);
    let width = L + panels.len() as f64 * (PW + GAP) + 10.0;
    let max_series = panels.iter().map(|p| p.series.len()).max().unwrap_or(0) as f64;
    let height = TOP + PH + 50.0 + 18.0 * max_series + 10.0;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{L}" y="22" font-size="15">{}</text>
"#,
        esc(title)
    );
    for (pi, panel) in panels.iter().enumerate() {
        let x0 = L + pi as f64 * (PW + GAP);
        let y0 = TOP + PH;
        svg.push_str(&format!(
            r#"<text x="{x0}" y="{:.0}" font-size="13" font-weight="bold">{}</text>
"#,
            TOP - 12.0,
            esc(&panel.title)
        ));
        // Grid and y axis: share of requests per bin.
        let mut y = 0.0;
        while y <= ytop + 1e-9 {
            let py = y0 - y / ytop * PH;
            svg.push_str(&format!(
                r##"<line x1="{x0}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" text-anchor="end">{y}%</text>
"##,
                x0 + PW,
                x0 - 6.0,
                py + 4.0
            ));
            y += ystep;
        }
        svg.push_str(&format!(
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" transform="rotate(-90 {:.1} {:.1})">share of requests per bin</text>
"#,
            x0 - 48.0,
            TOP + PH / 2.0,
            x0 - 48.0,
            TOP + PH / 2.0
        ));
        // x axis: log scale, ticks at 1-2-5 per decade.
        let decade_px = PW / (lhi - llo);
        let mut d = lo;
        while d <= hi * 1.0001 {
            for m in [1.0, 2.0, 5.0] {
                let v = d * m;
                if v > hi * 1.0001 {
                    break;
                }
                let px = x0 + x_of(v);
                let major = m == 1.0;
                svg.push_str(&format!(
                    r##"<line x1="{px:.1}" y1="{y0}" x2="{px:.1}" y2="{:.1}" stroke="#888"/>
"##,
                    y0 + if major { 6.0 } else { 3.0 },
                ));
                // 2 and 5 are labelled only where a decade is wide enough for three labels.
                if major || decade_px >= 220.0 {
                    svg.push_str(&format!(
                        r##"<text x="{px:.1}" y="{:.1}" text-anchor="middle" fill="{}">{}</text>
"##,
                        y0 + 18.0,
                        if major { "#000" } else { "#666" },
                        fmt_ms(v)
                    ));
                }
            }
            d *= 10.0;
        }
        svg.push_str(&format!(
            r#"<line x1="{x0}" y1="{y0}" x2="{:.1}" y2="{y0}" stroke="black"/><line x1="{x0}" y1="{TOP}" x2="{x0}" y2="{y0}" stroke="black"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">latency (log scale)</text>
"#,
            x0 + PW,
            x0 + PW / 2.0,
            y0 + 36.0
        ));
        let bw = PW / bins as f64;
        for (si, (s, h)) in panel.series.iter().zip(&hists[pi]).enumerate() {
            let col = COLORS[si % COLORS.len()];
            for (i, share) in h.iter().enumerate() {
                if *share <= 0.0 {
                    continue;
                }
                let bh = share / ytop * PH;
                svg.push_str(&format!(
                    r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{col}" fill-opacity="0.45" stroke="{col}" stroke-width="0.6"/>
"#,
                    x0 + i as f64 * bw,
                    y0 - bh,
                    bw,
                    bh
                ));
            }
            let mut sorted: Vec<f64> = s.ms.iter().copied().filter(|v| v.is_finite()).collect();
            sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let legend_y = y0 + 56.0 + si as f64 * 18.0;
            if sorted.is_empty() {
                svg.push_str(&format!(
                    r#"<rect x="{x0}" y="{:.1}" width="10" height="10" fill="{col}"/><text x="{:.1}" y="{:.1}">{}: no samples</text>
"#,
                    legend_y - 9.0,
                    x0 + 15.0,
                    legend_y,
                    esc(&s.label)
                ));
                continue;
            }
            let (p50, p99) = (percentile(&sorted, 0.5), percentile(&sorted, 0.99));
            for (q, v, dash) in [("p50", p50, "6,3"), ("p99", p99, "2,2")] {
                let px = x0 + x_of(v);
                svg.push_str(&format!(
                    r#"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{y0}" stroke="{col}" stroke-width="1.5" stroke-dasharray="{dash}"/><text x="{:.1}" y="{:.1}" fill="{col}" font-size="11">{q}</text>
"#,
                    px + 3.0,
                    TOP + 12.0 + si as f64 * 13.0 + if q == "p99" { 26.0 } else { 0.0 },
                ));
            }
            svg.push_str(&format!(
                r#"<rect x="{x0}" y="{:.1}" width="10" height="10" fill="{col}"/><text x="{:.1}" y="{:.1}">{}: n={}, p50 {}, p99 {}, max {}</text>
"#,
                legend_y - 9.0,
                x0 + 15.0,
                legend_y,
                esc(&s.label),
                sorted.len(),
                fmt_ms(p50),
                fmt_ms(p99),
                fmt_ms(*sorted.last().unwrap())
            ));
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `loadtest compare BEFORE AFTER`: for every figure both output folders hold
/// (`<name>.samples.json`), one SVG with the two runs side by side on the same axes.
pub fn compare(before: &Path, after: &Path, out: &Path) -> Result<usize, String> {
    let read = |dir: &Path, name: &str| -> Result<Vec<Series>, String> {
        let p = dir.join(name);
        let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", p.display()))
    };
    let mut names: Vec<String> = std::fs::read_dir(before)
        .map_err(|e| format!("{}: {e}", before.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".samples.json") && after.join(n).exists())
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(format!(
            "no figure in common: {} and {} hold no *.samples.json of the same name",
            before.display(),
            after.display()
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    for n in &names {
        let figure = n.trim_end_matches(".samples.json");
        let panels = [
            Panel {
                title: format!("before: {}", before.display()),
                series: read(before, n)?,
            },
            Panel {
                title: format!("after: {}", after.display()),
                series: read(after, n)?,
            },
        ];
        let svg = svg_panels(&format!("{figure}: before / after"), &panels);
        let path = out.join(format!("compare-{figure}.svg"));
        std::fs::write(&path, svg).map_err(|e| e.to_string())?;
        println!("wrote {}", path.display());
    }
    Ok(names.len())
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
    use super::*;

    fn series(label: &str, ms: &[f64]) -> Series {
        Series {
            label: label.into(),
            ms: ms.to_vec(),
        }
    }

    /// The slowest sample sits in its own bin at its own place on the log axis, not piled into
    /// the last bar; the axes are labelled and p50/p99 are marked.
    #[test]
    fn histogram_is_log_scale_labelled_and_keeps_outliers_apart() {
        let mut ms: Vec<f64> = (0..990).map(|i| 2.0 + (i % 10) as f64 * 0.1).collect();
        ms.extend([40.0; 9]);
        ms.push(1500.0);
        let svg = svg_panels(
            "t",
            &[Panel {
                title: String::new(),
                series: vec![series("a", &ms)],
            }],
        );
        assert!(svg.contains("latency (log scale)"), "x axis label");
        assert!(svg.contains("share of requests per bin"), "y axis label");
        assert!(
            svg.contains(">p50<") && svg.contains(">p99<"),
            "percentile markers"
        );
        assert!(svg.contains("p50 2.5 ms, p99 2.9 ms, max 1.5 s"), "{svg}");
        for tick in [">1 ms<", ">10 ms<", ">100 ms<", ">1 s<", ">10 s<"] {
            assert!(svg.contains(tick), "tick {tick}");
        }
        // The axis spans 1 ms to 10 s (4 decades, 48 bins); 1500 ms falls in bin 38, not 47.
        let bars: Vec<f64> = svg
            .lines()
            .filter(|l| l.starts_with("<rect x=") && l.contains("fill-opacity"))
            .map(|l| l.split('"').nth(1).unwrap().parse().unwrap())
            .collect();
        let last = bars.iter().copied().fold(0.0, f64::max);
        let bin_38 = 70.0 + 38.0 * 620.0 / 48.0;
        assert!(
            (last - bin_38).abs() < 0.1,
            "outlier bar at {last}, expected {bin_38}"
        );
    }

    #[test]
    fn compare_draws_two_runs_side_by_side() {
        let (a, b, out) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        write_svg(
            a.path(),
            "admission-x",
            "x",
            &[("admission", &[Duration::from_millis(3)])],
        )
        .unwrap();
        write_svg(
            b.path(),
            "admission-x",
            "x",
            &[("admission", &[Duration::from_millis(5)])],
        )
        .unwrap();
        assert_eq!(compare(a.path(), b.path(), out.path()).unwrap(), 1);
        let svg = std::fs::read_to_string(out.path().join("compare-admission-x.svg")).unwrap();
        assert!(svg.contains("before: ") && svg.contains("after: "));
        assert_eq!(svg.matches("latency (log scale)").count(), 2, "two panels");
        assert!(compare(a.path(), out.path(), out.path()).is_err());
    }

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
