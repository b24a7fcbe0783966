//! The fingerprint of the sources this core is built from (`SOURCE_FINGERPRINT`), so that
//! `agents/arbitration/engine.py` can refuse a core built from other sources (a `git pull`
//! without `make setup`) instead of running it silently. FNV-1a 64 over the files that
//! `engine.source_fingerprint` hashes, in the same order; written out by hand on both sides
//! because neither needs a hashing dependency for it.

use std::fs;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<String> = fs::read_dir(root.join("src"))
        .expect("src/ is readable")
        .map(|e| {
            e.expect("an entry of src/")
                .file_name()
                .into_string()
                .expect("utf-8 name")
        })
        .filter(|name| name.ends_with(".rs"))
        .map(|name| format!("src/{name}"))
        .collect();
    files.push("Cargo.toml".into());
    files.push("Cargo.lock".into());
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for name in &files {
        for byte in name
            .bytes()
            .chain([0])
            .chain(fs::read(root.join(name)).expect("a source"))
        {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        println!("cargo:rerun-if-changed={name}");
    }
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rustc-env=FIML_ARBCORE_FINGERPRINT={hash:016x}");
}
