//! The dispatcher's promises, without a token: the bound on jobs at once on every path,
//! panics turned into errors, quick jobs not held up by slow ones, and the path a
//! current-thread runtime takes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keyward_core::Error;

use super::Dispatcher;

/// Runs 64 jobs from 64 tasks through a dispatcher of `cap`, every third one slow
/// and the rest quick; returns the most that ran at once.
async fn most_at_once(cap: usize) -> usize {
    let d = Dispatcher::new(cap);
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let jobs: Vec<_> = (0..64)
        .map(|i| {
            let (d, now, most) = (Arc::clone(&d), Arc::clone(&now), Arc::clone(&most));
            tokio::spawn(async move {
                let job = move || {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(2));
                    now.fetch_sub(1, Ordering::SeqCst);
                    Ok(i)
                };
                if i % 3 == 0 {
                    d.run(job).await
                } else {
                    d.run_quick(job).await
                }
            })
        })
        .collect();
    for (i, j) in jobs.into_iter().enumerate() {
        assert_eq!(j.await.unwrap().unwrap(), i);
    }
    most.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_most_cap_jobs_run_at_once() {
    assert_eq!(most_at_once(1).await, 1);
    assert_eq!(most_at_once(3).await, 3);
}

/// `tasks` tasks each running `per_task` quick jobs in a loop, each job taking `lasts`
/// and checking it got its own result back.
fn callers(
    d: &Arc<Dispatcher>,
    tasks: u64,
    per_task: u64,
    lasts: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..tasks)
        .map(|t| {
            let d = Arc::clone(d);
            tokio::spawn(async move {
                for i in 0..per_task {
                    let want = t * per_task + i;
                    let got = d
                        .run_quick(move || {
                            std::thread::sleep(lasts);
                            Ok(want)
                        })
                        .await;
                    assert_eq!(got.unwrap(), want);
                }
            })
        })
        .collect()
}

/// Quick jobs from tasks signing in a loop, more tasks than slots: every result comes
/// back to its own caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_callers_get_their_own_results() {
    let d = Dispatcher::new(2);
    for t in callers(&d, 6, 500, Duration::ZERO) {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_job_is_an_error_and_its_slot_stays() {
    let d = Dispatcher::new(1);
    for quick in [false, true] {
        let job = || -> Result<(), Error> { panic!("job panics on purpose") };
        let e = if quick {
            d.run_quick(job).await
        } else {
            d.run(job).await
        }
        .unwrap_err();
        assert!(e.to_string().contains("panicked"), "{e}");
        assert_eq!(d.run_quick(|| Ok(7)).await.unwrap(), 7);
        assert_eq!(d.run(|| Ok(8)).await.unwrap(), 8);
    }
}

/// A slow job holding one of two slots: quick jobs from many tasks still all finish
/// while it runs (the slow job waits until they have).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_jobs_are_not_held_up_by_a_slow_one() {
    let d = Dispatcher::new(2);
    let (release, held) = std::sync::mpsc::channel::<()>();
    let slow = {
        let d = Arc::clone(&d);
        tokio::spawn(async move {
            d.run(move || {
                held.recv_timeout(Duration::from_secs(30))
                    .map_err(|_| Error::backend("the slow job was never released"))
            })
            .await
        })
    };
    let quick = callers(&d, 8, 50, Duration::from_micros(100));
    let all = async {
        for q in quick {
            q.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(20), all)
        .await
        .expect("quick jobs finished while the slow job held its slot");
    release.send(()).unwrap();
    slow.await.unwrap().unwrap();
}

/// On a current-thread runtime nothing can run in place: quick jobs go to a drainer.
#[tokio::test(flavor = "current_thread")]
async fn a_current_thread_runtime_gets_its_results_too() {
    let d = Dispatcher::new(1);
    for i in 0..20 {
        assert_eq!(d.run_quick(move || Ok(i)).await.unwrap(), i);
    }
}

/// Whether a task ticking on the only worker thread ran while a quick job of 20 ms ran
/// from a task on that worker, on a dispatcher whose earlier quick jobs took `earlier`.
async fn worker_free_during_a_job(earlier: Duration) -> bool {
    let d = Dispatcher::new(1);
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = {
        let ticks = Arc::clone(&ticks);
        tokio::spawn(async move {
            loop {
                ticks.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        })
    };
    let caller = tokio::spawn(async move {
        for _ in 0..8 {
            d.run_quick(move || {
                std::thread::sleep(earlier);
                Ok(())
            })
            .await
            .unwrap();
        }
        // Back onto the thread holding the worker (block_in_place moved it away).
        tokio::task::yield_now().await;
        d.run_quick(move || {
            let before = ticks.load(Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            Ok(ticks.load(Ordering::SeqCst) != before)
        })
        .await
        .unwrap()
    });
    let free = caller.await.unwrap();
    ticker.abort();
    free
}

/// A token whose signatures are short runs them straight on the worker, like software
/// keys; one whose signatures are long first hands the worker to another thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn short_jobs_run_straight_and_long_ones_leave_the_worker_free() {
    assert!(
        !worker_free_during_a_job(Duration::ZERO).await,
        "short jobs should run straight on the worker"
    );
    assert!(
        worker_free_during_a_job(Duration::from_millis(2)).await,
        "a long job kept the worker from its other tasks"
    );
}
