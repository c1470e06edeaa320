// SPDX-License-Identifier: GPL-2.0

//! The sensor of a `utilization` loop: the CPU time of a set of cgroup v2 directories.
//!
//! Every cgroup v2 directory has a `cpu.stat` whose `usage_usec` line is the CPU time,
//! in microseconds, that its tasks and those of its descendants have used since it was
//! made (forked workers and exited children included, unlike `/proc/PID/stat`). Between
//! two readings `elapsed` seconds apart, the utilization in percent is
//!
//! ```text
//! U = sum over the cgroups of Δusage_usec / (elapsed * 1e6 * cpus) * 100
//! ```
//!
//! with `cpus` the CPUs the servers may use (the configuration's `cpus`, by default the
//! online CPUs). The parsing ([`parse_usage_usec`]) and the arithmetic
//! ([`utilization_pct`]) are pure functions; [`read_usage_usec`] and [`CpuSensor`] read
//! the files under the directories they are given.

use anyhow::{bail, Context, Result};
use std::{
    path::{Path, PathBuf},
    time::Instant,
};

/// The `usage_usec` of the text of a `cpu.stat` file.
pub fn parse_usage_usec(text: &str) -> Result<u64> {
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("usage_usec") {
            let v = words.next().context("usage_usec without a value")?;
            return v
                .parse()
                .with_context(|| format!("usage_usec {v:?} is not a number"));
        }
    }
    bail!("no usage_usec line")
}

/// The `usage_usec` of the cgroup v2 directory `dir` (its `cpu.stat`).
pub fn read_usage_usec(dir: &Path) -> Result<u64> {
    if !dir.is_dir() {
        bail!("cgroup {} does not exist", dir.display());
    }
    let stat = dir.join("cpu.stat");
    let text = std::fs::read_to_string(&stat).with_context(|| {
        format!(
            "cgroup {}: cannot read its cpu.stat (is it a cgroup v2 directory?)",
            dir.display()
        )
    })?;
    parse_usage_usec(&text).with_context(|| format!("in {}", stat.display()))
}

/// The utilization, percent of `cpus` CPUs, of cgroups whose `usage_usec` went from
/// `before` to `after` (one per cgroup, in the same order) in `elapsed_s` seconds.
/// `None` if there is nothing to divide by, the lists differ in length, or a counter
/// went back (its cgroup was made anew: what it used in between is unknown).
pub fn utilization_pct(before: &[u64], after: &[u64], elapsed_s: f64, cpus: f64) -> Option<f64> {
    if before.len() != after.len() || !(elapsed_s > 0.0 && cpus > 0.0) {
        return None;
    }
    let mut used_usec = 0u64;
    for (b, a) in before.iter().zip(after) {
        used_usec = used_usec.saturating_add(a.checked_sub(*b)?);
    }
    Some(used_usec as f64 / (elapsed_s * 1e6 * cpus) * 100.0)
}

/// The number of CPUs in a kernel CPU list (`0-3,5`, as in
/// `/sys/devices/system/cpu/online`); `None` if it does not parse or is empty.
pub fn parse_cpu_list(text: &str) -> Option<usize> {
    let mut n = 0usize;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi): (usize, usize) = (lo.parse().ok()?, hi.parse().ok()?);
                hi.checked_sub(lo)? + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

/// The online CPUs (`/sys/devices/system/cpu/online`; else the CPUs this process may
/// run on).
pub fn online_cpus() -> Result<f64> {
    if let Some(n) = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .as_deref()
        .and_then(parse_cpu_list)
    {
        return Ok(n as f64);
    }
    let n = std::thread::available_parallelism().context("cannot count the online CPUs")?;
    Ok(n.get() as f64)
}

/// The utilization of a set of cgroups, period after period.
#[derive(Debug)]
pub struct CpuSensor {
    dirs: Vec<PathBuf>,
    cpus: f64,
    /// The last reading: every cgroup's `usage_usec`, and when.
    last: Option<(Vec<u64>, Instant)>,
}

impl CpuSensor {
    /// A sensor of the cgroup v2 directories `dirs`, dividing by `cpus` CPUs.
    pub fn new(dirs: Vec<PathBuf>, cpus: f64) -> Self {
        Self {
            dirs,
            cpus,
            last: None,
        }
    }

    /// The CPUs the usage is divided by.
    pub fn cpus(&self) -> f64 {
        self.cpus
    }

    /// Forgets the last reading: the next one starts afresh.
    pub fn clear(&mut self) {
        self.last = None;
    }

    /// Reads every cgroup at `now`: the utilization since the last reading, or `None`
    /// on the first reading (or when a counter went back). An error (a cgroup gone)
    /// forgets the last reading.
    pub fn read_at(&mut self, now: Instant) -> Result<Option<f64>> {
        let usage = match self
            .dirs
            .iter()
            .map(|d| read_usage_usec(d))
            .collect::<Result<Vec<u64>>>()
        {
            Ok(u) => u,
            Err(e) => {
                self.last = None;
                return Err(e);
            }
        };
        let u = self.last.as_ref().and_then(|(before, at)| {
            utilization_pct(
                before,
                &usage,
                now.saturating_duration_since(*at).as_secs_f64(),
                self.cpus,
            )
        });
        self.last = Some((usage, now));
        Ok(u)
    }

    /// [`CpuSensor::read_at`] now.
    pub fn read(&mut self) -> Result<Option<f64>> {
        self.read_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A `cpu.stat` as the kernel writes it.
    fn stat(usage: u64) -> String {
        format!(
            "usage_usec {usage}\nuser_usec {}\nsystem_usec {}\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
            usage / 2,
            usage - usage / 2
        )
    }

    #[test]
    fn parses_usage_usec() {
        assert_eq!(parse_usage_usec(&stat(123_456)).unwrap(), 123_456);
        assert_eq!(parse_usage_usec("user_usec 1\nusage_usec 7").unwrap(), 7);
        let e = |t: &str| format!("{:#}", parse_usage_usec(t).unwrap_err());
        assert!(e("user_usec 1\n").contains("no usage_usec"));
        assert!(e("").contains("no usage_usec"));
        assert!(e("usage_usec\n").contains("without a value"));
        assert!(e("usage_usec -3\n").contains("not a number"));
    }

    #[test]
    fn utilization_of_two_readings() {
        // 2 CPUs, 2 s: 4e6 µs available. 0.6 s + 0.6 s used: 30 %.
        let u = utilization_pct(&[1_000_000, 5_000], &[1_600_000, 605_000], 2.0, 2.0);
        assert!((u.unwrap() - 30.0).abs() < 1e-9, "{u:?}");
        // One CPU all the time on a 1-CPU set: 100 %; fractional CPUs.
        assert_eq!(utilization_pct(&[0], &[500_000], 0.5, 1.0), Some(100.0));
        let u = utilization_pct(&[0], &[750_000], 1.0, 1.5).unwrap();
        assert!((u - 50.0).abs() < 1e-9);
        // A counter that went back (the cgroup was made anew), mismatched lists, no
        // time: no measurement.
        assert_eq!(utilization_pct(&[10, 10], &[5, 20], 1.0, 1.0), None);
        assert_eq!(utilization_pct(&[10], &[5, 20], 1.0, 1.0), None);
        assert_eq!(utilization_pct(&[0], &[1], 0.0, 1.0), None);
        assert_eq!(utilization_pct(&[0], &[1], 1.0, 0.0), None);
    }

    #[test]
    fn the_sensor_reads_cgroup_directories() {
        let root = std::env::temp_dir().join(format!("qosmgr-cpu-{}", std::process::id()));
        let (full, degraded) = (root.join("web-full"), root.join("web-degraded"));
        std::fs::create_dir_all(&full).unwrap();
        std::fs::create_dir_all(&degraded).unwrap();
        std::fs::write(full.join("cpu.stat"), stat(10_000_000)).unwrap();
        std::fs::write(degraded.join("cpu.stat"), stat(2_000_000)).unwrap();
        assert_eq!(read_usage_usec(&full).unwrap(), 10_000_000);
        let mut s = CpuSensor::new(vec![full.clone(), degraded.clone()], 2.0);
        assert_eq!(s.cpus(), 2.0);
        let t0 = Instant::now();
        // The first reading only primes the sensor.
        assert_eq!(s.read_at(t0).unwrap(), None);
        // 1 s later: 0.5 s and 0.1 s used of 2 CPUs: 30 %.
        std::fs::write(full.join("cpu.stat"), stat(10_500_000)).unwrap();
        std::fs::write(degraded.join("cpu.stat"), stat(2_100_000)).unwrap();
        let u = s.read_at(t0 + Duration::from_secs(1)).unwrap().unwrap();
        assert!((u - 30.0).abs() < 1e-9, "{u}");
        // The next period from this reading: 2 s, 0.4 s used: 10 %.
        std::fs::write(full.join("cpu.stat"), stat(10_900_000)).unwrap();
        let u = s.read_at(t0 + Duration::from_secs(3)).unwrap().unwrap();
        assert!((u - 10.0).abs() < 1e-9, "{u}");
        // A cgroup made anew (counter back to near 0): no measurement, then afresh.
        std::fs::write(degraded.join("cpu.stat"), stat(1_000)).unwrap();
        assert_eq!(s.read_at(t0 + Duration::from_secs(4)).unwrap(), None);
        std::fs::write(degraded.join("cpu.stat"), stat(201_000)).unwrap();
        let u = s.read_at(t0 + Duration::from_secs(5)).unwrap().unwrap();
        assert!((u - 10.0).abs() < 1e-9, "{u}");
        // A cgroup that disappears: an error that names it, and the sensor starts
        // afresh when it is back.
        std::fs::remove_dir_all(&degraded).unwrap();
        let e = format!("{:#}", s.read_at(t0 + Duration::from_secs(6)).unwrap_err());
        assert!(e.contains("web-degraded does not exist"), "{e}");
        std::fs::create_dir_all(&degraded).unwrap();
        std::fs::write(degraded.join("cpu.stat"), "user_usec 5\n").unwrap();
        let e = format!("{:#}", s.read_at(t0 + Duration::from_secs(7)).unwrap_err());
        assert!(e.contains("no usage_usec"), "{e}");
        std::fs::write(degraded.join("cpu.stat"), stat(0)).unwrap();
        assert_eq!(s.read_at(t0 + Duration::from_secs(8)).unwrap(), None);
        // A directory without cpu.stat is not a cgroup.
        let plain = root.join("plain");
        std::fs::create_dir_all(&plain).unwrap();
        let e = format!("{:#}", read_usage_usec(&plain).unwrap_err());
        assert!(e.contains("cannot read its cpu.stat"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn counts_cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-3,5,7-8"), Some(7));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
        assert!(online_cpus().unwrap() >= 1.0);
    }
}
