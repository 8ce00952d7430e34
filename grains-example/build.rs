//! Sets `cfg(granary_mongodb)` when the MongoDB tests should run: `MONGODB_URI` is set,
//! or `CI=true` (where they must run, and so fail without a server). Without it they
//! are `#[ignore]`d, so cargo reports them as ignored instead of passing silently.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(granary_mongodb)");
    println!("cargo::rerun-if-env-changed=MONGODB_URI");
    println!("cargo::rerun-if-env-changed=CI");
    let uri_set = std::env::var("MONGODB_URI").is_ok_and(|v| !v.trim().is_empty());
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if uri_set || ci {
        println!("cargo::rustc-cfg=granary_mongodb");
    }
}
