//! Two ranks on this machine, started by the test as torchrun would start them: the collectives
//! give what their definitions say, and a dead peer is an error within the timeout, not a hang.

use contrast_shim::{ProcessGroup, ReduceOp, Rendezvous};
use std::process::Command;
use std::time::{Duration, Instant};
use tch::{Kind, Tensor};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rendezvous(rank: usize, world: usize, port: u16, timeout: Duration) -> Rendezvous {
    Rendezvous {
        addr: "127.0.0.1".into(),
        port,
        rank,
        world,
        timeout,
        client_only: false,
        prefix: "test/".into(),
        interface: "lo".into(),
        backend: contrast_shim::Backend::Gloo,
    }
}

/// Runs the ignored test `name` as `world` ranks; returns their exit statuses and stderr.
fn spawn(name: &str, world: usize, extra: &[(&str, &str)]) -> Vec<(bool, String)> {
    let port = free_port().to_string();
    let children: Vec<_> = (0..world)
        .map(|r| {
            let mut c = Command::new(std::env::current_exe().unwrap());
            c.args([
                "--exact",
                name,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("RANK", r.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("MASTER_PORT", &port)
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
            for (k, v) in extra {
                c.env(k, v);
            }
            c.spawn().unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stderr).into_owned()
                    + &String::from_utf8_lossy(&o.stdout),
            )
        })
        .collect()
}

fn env(k: &str) -> usize {
    std::env::var(k).unwrap().parse().unwrap()
}

#[test]
#[ignore]
fn rank_collectives() {
    let (rank, world) = (env("RANK"), env("WORLD_SIZE"));
    let pg = ProcessGroup::new(&rendezvous(
        rank,
        world,
        env("MASTER_PORT") as u16,
        Duration::from_secs(30),
    ))
    .unwrap();
    let r = rank as f64;
    let a = Tensor::from_slice(&[1.0f32 + r as f32, 10.0 * r as f32]);
    let b = Tensor::full([3], r + 1.0, (Kind::Double, tch::Device::Cpu));
    pg.all_reduce(&a, ReduceOp::Sum).unwrap();
    pg.all_reduce(&b, ReduceOp::Sum).unwrap();
    // ranks 0..world: Σ(1 + r), Σ 10 r, Σ (r + 1)
    let w = world as f64;
    let s = w * (w - 1.0) / 2.0;
    assert_eq!(
        Vec::<f32>::try_from(&a).unwrap(),
        vec![(w + s) as f32, (10.0 * s) as f32]
    );
    assert_eq!(Vec::<f64>::try_from(&b).unwrap(), vec![w + s; 3]);
    let m = Tensor::from_slice(&[r as f32]);
    pg.all_reduce(&m, ReduceOp::Mean).unwrap();
    assert_eq!(m.double_value(&[0]), s / w);
    let x = Tensor::from_slice(&[r as f32; 2]);
    pg.all_reduce(&x, ReduceOp::Max).unwrap();
    assert_eq!(x.double_value(&[1]), w - 1.0);
    let g = pg.all_gather(&Tensor::from_slice(&[r as i64, 7])).unwrap();
    for (i, t) in g.iter().enumerate() {
        assert_eq!(Vec::<i64>::try_from(t).unwrap(), vec![i as i64, 7]);
    }
    let c = Tensor::from_slice(&[r as f32 + 5.0]);
    pg.broadcast(&c, 1).unwrap();
    assert_eq!(c.double_value(&[0]), 6.0);
    if rank == 0 {
        pg.store_set("hello", b"world").unwrap();
    }
    assert_eq!(pg.store_get("hello").unwrap(), b"world");
    pg.barrier().unwrap();
    println!("rank {rank} ok");
}

#[test]
fn collectives_over_two_and_three_ranks() {
    for world in [2, 3] {
        let out = spawn("rank_collectives", world, &[]);
        for (r, (ok, log)) in out.iter().enumerate() {
            assert!(ok, "rank {r} of {world} failed:\n{log}");
            assert!(log.contains(&format!("rank {r} ok")), "{log}");
        }
    }
}

#[test]
#[ignore]
fn rank_that_dies() {
    let (rank, world) = (env("RANK"), env("WORLD_SIZE"));
    let pg = ProcessGroup::new(&rendezvous(
        rank,
        world,
        env("MASTER_PORT") as u16,
        Duration::from_secs(20),
    ))
    .unwrap();
    let t = Tensor::ones([4], (Kind::Float, tch::Device::Cpu));
    pg.all_reduce(&t, ReduceOp::Sum).unwrap();
    if rank == 1 {
        // killed by the OS, as a crashed or OOM-killed rank would be
        std::process::abort();
    }
    let t0 = Instant::now();
    let e = pg.all_reduce(&t, ReduceOp::Sum).unwrap_err();
    println!(
        "rank {rank}: error after {:.1} s: {e}",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn a_dead_rank_is_an_error_for_the_others_not_a_hang() {
    let t0 = Instant::now();
    let out = spawn("rank_that_dies", 2, &[]);
    assert!(!out[1].0, "rank 1 aborts");
    let (ok, log) = &out[0];
    assert!(ok, "rank 0 should get an error, print it and end:\n{log}");
    assert!(log.contains("rank 0: error after"), "{log}");
    assert!(log.contains("torch.distributed all_reduce"), "{log}");
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
    eprintln!(
        "{}",
        log.lines().find(|l| l.contains("error after")).unwrap()
    );
}

/// The NCCL backend of builds that found the CUDA and NCCL headers: a group of one rank
/// all-reduces a CUDA tensor on a GPU machine; without a GPU, creating it is a clear error.
#[test]
fn nccl_backend_of_one_rank() {
    if !contrast_shim::nccl_available() {
        println!(
            "nccl_backend_of_one_rank: skipped, this build has no NCCL (see the crate README)"
        );
        return;
    }
    let mut r = rendezvous(0, 1, free_port(), Duration::from_secs(30));
    r.backend = contrast_shim::Backend::Nccl;
    match (ProcessGroup::new(&r), tch::Cuda::is_available()) {
        (Ok(pg), true) => {
            let t = Tensor::ones([4], (Kind::Float, tch::Device::Cuda(0)));
            pg.all_reduce(&t, ReduceOp::Sum).unwrap();
            assert_eq!(t.sum(Kind::Float).double_value(&[]), 4.0);
            println!("nccl_backend_of_one_rank: all_reduce on cuda:0 ok");
        }
        (Ok(pg), false) => {
            // created lazily: the first collective needs a device
            let t = Tensor::ones([4], (Kind::Float, tch::Device::Cpu));
            let e = pg.all_reduce(&t, ReduceOp::Sum).unwrap_err();
            println!("nccl_backend_of_one_rank: no GPU here, a collective fails: {e}");
        }
        (Err(e), cuda) => {
            assert!(!cuda, "NCCL group refused on a GPU machine: {e}");
            println!("nccl_backend_of_one_rank: no GPU here, NCCL refuses the group: {e}");
            assert!(
                e.message.to_lowercase().contains("gpu") || e.message.contains("CUDA"),
                "{e}"
            );
        }
    }
}
