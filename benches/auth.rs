//! tollgate's own SCRAM-SHA-256 logins to an upstream (the client side): a login whose salted
//! password is kept from an earlier login to the same server, and one that must run PBKDF2
//! (4096 iterations) because the salt is new. The server side is tollgate's own SCRAM server.

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate::auth::scram::Binding;
use tollgate::auth::scram_client::ScramClient;
use tollgate::auth::{ScramServer, ScramVerifier};

fn login(verifier: &ScramVerifier, password: &str) {
    let mut c = ScramClient::for_postgres(password);
    let (server, first) = ScramServer::start(
        verifier.clone(),
        c.client_first().as_bytes(),
        Binding::default(),
    )
    .unwrap();
    let fin = c.client_final(first.as_bytes()).unwrap();
    let server_final = server.finish(fin.as_bytes()).unwrap();
    c.verify_server_final(server_final.as_bytes()).unwrap();
}

fn benches(c: &mut Criterion) {
    let kept = ScramVerifier::derive_with(b"upstream-secret", b"the same salt".to_vec(), 4096);
    login(&kept, "upstream-secret");
    c.bench_function("upstream_scram_login_salted_password_kept", |b| {
        b.iter(|| login(&kept, "upstream-secret"))
    });
    let mut n = 0u64;
    c.bench_function("upstream_scram_login_new_salt", |b| {
        b.iter(|| {
            n += 1;
            // A salt never seen: PBKDF2 runs on the client side (and once here, outside the
            // login, to make the verifier).
            let v = ScramVerifier::derive_with(b"upstream-secret", n.to_le_bytes().to_vec(), 4096);
            login(&v, "upstream-secret")
        })
    });
}

criterion_group!(auth, benches);
criterion_main!(auth);
