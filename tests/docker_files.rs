//! Packaging without a Docker engine: docker-compose.yml parses as YAML and every file it or the
//! Dockerfile refers to exists; the container's config and example policies load; the
//! entrypoint script initialises a vault, agents and an admin token from the environment
//! (run here with the freshly built binary) without printing any secret.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn compose() -> serde_yaml::Value {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    serde_yaml::from_str(&text).expect("docker-compose.yml is valid YAML")
}

/// The host side of a bind mount (`./x:/y[:ro]`), or `None` for a named volume.
fn bind_source(volume: &str) -> Option<&str> {
    let source = volume.split(':').next()?;
    (source.starts_with('.') || source.starts_with('/')).then_some(source)
}

#[test]
fn compose_file_refers_only_to_files_that_exist() {
    let doc = compose();
    let services = doc["services"].as_mapping().expect("services");
    for name in ["postgres", "redis", "mongo", "tollgate"] {
        assert!(services.contains_key(name), "service {name}");
    }
    // The official MongoDB image (the demo's SecantusDB is for tests only).
    assert!(
        doc["services"]["mongo"]["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("mongo:")),
        "the mongo service runs the official image"
    );
    let named_volumes = doc["volumes"].as_mapping().cloned().unwrap_or_default();
    let mut checked = 0;
    for (name, service) in services {
        let name = name.as_str().unwrap();
        if let Some(build) = service.get("build") {
            let context = root().join(build["context"].as_str().unwrap_or("."));
            assert!(
                context.is_dir(),
                "{name}: build context {}",
                context.display()
            );
            let dockerfile = context.join(build["dockerfile"].as_str().unwrap_or("Dockerfile"));
            assert!(dockerfile.is_file(), "{name}: {}", dockerfile.display());
            checked += 1;
        }
        for v in service["volumes"].as_sequence().into_iter().flatten() {
            let v = v.as_str().expect("short volume syntax");
            match bind_source(v) {
                Some(source) => {
                    assert!(
                        root().join(source).exists(),
                        "{name}: mounted {source} is missing"
                    );
                    checked += 1;
                }
                None => {
                    let volume = v.split(':').next().unwrap();
                    assert!(
                        named_volumes.contains_key(volume),
                        "{name}: volume {volume} is not declared"
                    );
                }
            }
        }
        if let Some(entry) = service["entrypoint"].as_sequence() {
            // An in-image path: the Dockerfile must put a file of ours there.
            let target = entry[0].as_str().unwrap();
            let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
            let copied = dockerfile
                .lines()
                .filter_map(|l| l.strip_prefix("COPY "))
                .find(|l| l.split_whitespace().last() == Some(target))
                .unwrap_or_else(|| panic!("{name}: no COPY puts the entrypoint at {target}"));
            let source = copied.split_whitespace().next().unwrap();
            assert!(
                root().join(source).is_file(),
                "{name}: entrypoint source {source}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} references checked");
}

#[test]
fn dockerfile_copy_sources_exist_and_the_runtime_user_is_not_root() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let mut copies = 0;
    for line in text.lines().filter_map(|l| l.strip_prefix("COPY ")) {
        if line.starts_with("--from=") {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[..parts.len() - 1] {
            assert!(
                root().join(source).exists(),
                "COPY source {source} is missing"
            );
            copies += 1;
        }
    }
    assert!(copies >= 5, "{copies}");
    assert!(text.matches("FROM ").count() >= 2, "multi-stage build");
    let user = text
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("a USER line");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "{user}"
    );
}

/// The container's config, with its absolute paths moved under `dir`.
fn local_config(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(root().join("docker/tollgate.toml"))
        .unwrap()
        .replace("/var/lib/tollgate", dir.to_str().unwrap())
        .replace(
            "/etc/tollgate/policies",
            root().join("policies").to_str().unwrap(),
        );
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn entrypoint_initialises_vault_agents_and_admin_token_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = local_config(dir.path());
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_tollgate"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let master = "ab".repeat(32);
    let run = || {
        Command::new("sh")
            .arg(root().join("docker/entrypoint.sh"))
            .arg("check")
            .env("PATH", &path)
            .env("TOLLGATE_CONFIG", &config)
            .env("TOLLGATE_MASTER_KEY", &master)
            .env("TOLLGATE_VAULT_SHOP_USER", "tollgate_shop")
            .env("TOLLGATE_VAULT_SHOP_PASSWORD", "pw-shop-0123456789")
            .env("TOLLGATE_VAULT_CACHE_PASSWORD", "pw-cache-0123456789")
            .env("TOLLGATE_VAULT_MONGO_USER", "tollgate")
            .env("TOLLGATE_VAULT_MONGO_PASSWORD", "pw-mongo-0123456789")
            .output()
            .unwrap()
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("3 agent(s)"), "{stdout}");
    assert_eq!(
        stdout.matches("tg_").count(),
        3,
        "each agent token printed once: {stdout}"
    );
    assert_eq!(
        stdout.matches("tga_").count(),
        1,
        "one admin token: {stdout}"
    );
    for secret in [
        "pw-shop-0123456789",
        "pw-cache-0123456789",
        "pw-mongo-0123456789",
        &master,
    ] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "a secret was printed"
        );
    }
    let vault = std::fs::read_to_string(dir.path().join("vault.json")).unwrap();
    assert!(!vault.contains("pw-shop"), "the vault is encrypted");
    // A second start creates nothing new and prints no token.
    let again = run();
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success());
    assert!(
        !stdout.contains("tg_") && !stdout.contains("tga_"),
        "{stdout}"
    );
}

#[test]
fn example_policies_match_the_demo() {
    for (name, text) in tollgate::demo::files::POLICIES {
        let on_disk = std::fs::read_to_string(root().join("policies").join(name)).unwrap();
        assert_eq!(
            on_disk, text,
            "policies/{name} differs from the demo's policy"
        );
    }
}

/// `tollgate check` over the top-level `policies/` folder, as an operator would run it.
#[test]
fn the_policies_folder_passes_tollgate_check() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tollgate.toml");
    std::fs::write(
        &config,
        format!(
            "agents_file = \"agents.toml\"\npolicies_dir = \"{}\"\n[listen]\npostgres = \"127.0.0.1:0\"\n[vault]\nfile = \"vault.json\"\n[audit]\nfile = \"audit.log\"\n\
             [upstream.shop]\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = 5432\nuser = \"vault:u\"\npassword = \"vault:p\"\n\
             [upstream.cache]\nkind = \"redis\"\nhost = \"127.0.0.1\"\nport = 6379\nuser = \"default\"\npassword = \"vault:r\"\n\
             [upstream.mongo]\nkind = \"mongodb\"\nhost = \"127.0.0.1\"\nport = 27017\nuser = \"vault:mu\"\npassword = \"vault:mp\"\n",
            root().join("policies").display()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_tollgate");
    for agent in ["analyst", "writer", "trusted"] {
        let out = Command::new(bin)
            .args(["agent", "add", agent, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new(bin)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("3 policy file(s)"), "{stdout}");
    // The folder's README is not a policy file; a broken policy is reported with its place.
    let broken = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(root().join("policies")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), broken.path().join(e.file_name())).unwrap();
    }
    std::fs::write(
        broken.path().join("zz.toml"),
        "agents = [\"analyst\"]\n[[postgres]]\nupstream = \"cache\"\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        root().join("policies").to_str().unwrap(),
        broken.path().to_str().unwrap(),
    );
    std::fs::write(&config, text).unwrap();
    let out = Command::new(bin)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("zz.toml:3:") && stderr.contains("upstream \"cache\" is of kind \"redis\""),
        "{stderr}"
    );
}
