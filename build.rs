//! Compiles the protos with `protox` (pure Rust, no system `protoc`) and writes
//! the encoded descriptor set that server reflection serves.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut protos: Vec<PathBuf> = fs::read_dir("proto/clef/v1")?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    protos.retain(|p| p.extension().is_some_and(|e| e == "proto"));
    protos.sort();

    // Reflection also serves the error-detail messages so that clients can
    // decode them; code is generated for clef's own protos only.
    let mut served = protos.clone();
    served.push("proto/google/rpc/error_details.proto".into());
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out.join("clef_descriptor.bin"),
        protox::compile(&served, ["proto"])?.encode_to_vec(),
    )?;

    let fds = protox::compile(&protos, ["proto"])?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;

    println!("cargo:rerun-if-changed=proto");
    // `sqlx::migrate!` embeds the migrations: a changed one must rebuild.
    println!("cargo:rerun-if-changed=migrations");
    Ok(())
}
