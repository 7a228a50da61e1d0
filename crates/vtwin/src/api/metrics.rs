//! Request counts and latencies per API and method, in Prometheus text format.
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Default)]
struct Series {
    count: u64,
    errors: u64,
    sum: f64,
    buckets: [u64; 14],
}

#[derive(Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<(String, String), Series>>,
}

impl Metrics {
    pub fn record(&self, api: &str, method: &str, status: u16, d: Duration) {
        let secs = d.as_secs_f64();
        let mut m = self.series.lock();
        let key = (api.to_string(), method.to_string());
        let s = m.entry(key).or_default();
        s.count += 1;
        if status >= 400 {
            s.errors += 1;
        }
        s.sum += secs;
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                s.buckets[i] += 1;
            }
        }
    }

    pub fn render(&self) -> String {
        let m = self.series.lock();
        let mut o = String::new();
        o.push_str("# HELP vtwin_requests_total Requests served, by API and method.\n# TYPE vtwin_requests_total counter\n");
        for ((api, method), s) in m.iter() {
            let _ = writeln!(o, "vtwin_requests_total{{api=\"{api}\",method=\"{method}\"}} {}", s.count);
        }
        o.push_str("# HELP vtwin_request_errors_total Requests answered with a fault or error status.\n# TYPE vtwin_request_errors_total counter\n");
        for ((api, method), s) in m.iter() {
            let _ = writeln!(o, "vtwin_request_errors_total{{api=\"{api}\",method=\"{method}\"}} {}", s.errors);
        }
        o.push_str("# HELP vtwin_request_duration_seconds Request latency.\n# TYPE vtwin_request_duration_seconds histogram\n");
        for ((api, method), s) in m.iter() {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(o, "vtwin_request_duration_seconds_bucket{{api=\"{api}\",method=\"{method}\",le=\"{b}\"}} {}", s.buckets[i]);
            }
            let _ = writeln!(o, "vtwin_request_duration_seconds_bucket{{api=\"{api}\",method=\"{method}\",le=\"+Inf\"}} {}", s.count);
            let _ = writeln!(o, "vtwin_request_duration_seconds_sum{{api=\"{api}\",method=\"{method}\"}} {}", s.sum);
            let _ = writeln!(o, "vtwin_request_duration_seconds_count{{api=\"{api}\",method=\"{method}\"}} {}", s.count);
        }
        o
    }
}
