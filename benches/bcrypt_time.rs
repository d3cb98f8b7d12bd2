//! Times one bcrypt verification, the unit of work behind the login bound
//! that `bench/load.sh` reports (bound = cores / one verification).
//!
//! Not a criterion bench: it prints one machine-readable line, so the load
//! script can time bcrypt in the same run as the load, with the same crate
//! and version the server uses. Run with
//! `cargo bench --bench bcrypt_time -- [COST] [ROUNDS]` (defaults 12 and 8);
//! it prints `BCRYPT cost=12 rounds=8 median_ms=... min_ms=... max_ms=...`.

use std::hint::black_box;
use std::time::Instant;

fn main() {
    // cargo passes `--bench`; keep only the numbers.
    let numbers: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|arg| arg.parse().ok())
        .collect();
    let cost = numbers.first().copied().unwrap_or(12);
    let rounds = numbers.get(1).copied().unwrap_or(8).max(1);

    let password = "correct horse battery staple, benched";
    let hash = bcrypt::hash(password, cost).expect("bcrypt hash");
    // One untimed verification warms caches and the CPU's clock.
    assert!(bcrypt::verify(password, &hash).expect("bcrypt verify"));

    let mut times_ms: Vec<f64> = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            let ok = bcrypt::verify(black_box(password), black_box(&hash)).expect("bcrypt verify");
            let elapsed = started.elapsed();
            assert!(ok);
            elapsed.as_secs_f64() * 1000.0
        })
        .collect();
    times_ms.sort_by(f64::total_cmp);
    let median = if times_ms.len() % 2 == 1 {
        times_ms[times_ms.len() / 2]
    } else {
        (times_ms[times_ms.len() / 2 - 1] + times_ms[times_ms.len() / 2]) / 2.0
    };
    println!(
        "BCRYPT cost={cost} rounds={rounds} median_ms={median:.3} min_ms={:.3} max_ms={:.3}",
        times_ms[0],
        times_ms[times_ms.len() - 1]
    );
}
