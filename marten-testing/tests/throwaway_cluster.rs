//! The harness's last fallback: with no DATABASE_URL and nothing on 5432, it starts a
//! throwaway cluster from the installed PostgreSQL binaries. This test starts one on its
//! own port, connects to it and stops it again.

#[test]
fn a_throwaway_cluster_starts_answers_and_stops() {
    let url = match marten_testing::start_throwaway() {
        Ok(url) => url,
        Err(e) => panic!("the throwaway cluster did not start: {e}"),
    };
    assert!(url.contains(":54329/"), "{url}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let answer: i32 = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect to the throwaway cluster");
        tokio::spawn(conn);
        client
            .query_one("SELECT 41 + 1", &[])
            .await
            .expect("query")
            .get(0)
    });
    assert_eq!(answer, 42);
    // Leave it running when the rest of the suite uses it (no other server was found).
    let suite_uses_it = marten_testing::try_database_url().is_ok_and(|u| u == url);
    if suite_uses_it {
        return;
    }
    if let Err(e) = marten_testing::stop_throwaway() {
        panic!("stopping the throwaway cluster failed: {e}");
    }
}

/// A private cluster starts at the transaction id it was given (past the `pg_xact`
/// segments `initdb` made), answers on its own port and is gone after the drop.
#[test]
fn a_private_cluster_starts_at_the_given_transaction_id_and_is_removed_on_drop() {
    let cluster = match marten_testing::PrivateCluster::start_at_xid(9_999_800) {
        Ok(c) => c,
        Err(e) => panic!("the private cluster did not start: {e}"),
    };
    assert!(!cluster.url().contains(":5432/"), "{}", cluster.url());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let xid: String = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(cluster.url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the private cluster");
        tokio::spawn(conn);
        client
            .query_one("SELECT pg_current_xact_id()::text", &[])
            .await
            .expect("query")
            .get(0)
    });
    let xid: u64 = xid.parse().expect("a transaction id");
    assert!((9_999_800..9_999_900).contains(&xid), "next xid {xid}");
    let dir = cluster.data_dir().to_path_buf();
    drop(cluster);
    assert!(!dir.exists(), "{} left behind", dir.display());
}
