//! Compiles every `proto/seer/v1/*.proto` without a system `protoc`: the pure-Rust `protox`
//! compiler produces a `FileDescriptorSet`, which is (1) handed to `tonic-prost-build` to
//! generate the messages, clients and servers, and (2) written to `OUT_DIR` so that servers
//! can serve it over gRPC reflection.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let include = manifest_dir.join("proto");
    let package_dir = include.join("seer").join("v1");
    // A directory listed here is re-checked when files are added to or removed from it.
    println!("cargo:rerun-if-changed={}", package_dir.display());

    let mut protos = Vec::new();
    for entry in fs::read_dir(&package_dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            protos.push(path);
        }
    }
    // Deterministic output whatever order the file system lists the directory in.
    protos.sort();

    let mut compiler = protox::Compiler::new([&include])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&protos)?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("seer_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
