//! The check every topology can make that netpath used no netfilter
//! (`Topology::assert_no_netfilter`) asks the kernel itself, with no `nft`, `iptables` or
//! `conntrack` binary: here it must see a table and an entry made behind its back.
use std::{net::Ipv4Addr, path::Path};

use netpath_tests::{Topology, in_netns, netfilter};

#[test]
fn the_netfilter_check_sees_tables_and_conntrack_entries() {
    let mut t = Topology::new("nfc");
    assert_eq!(t.netfilter_findings(), Vec::<String>::new(), "a new namespace holds nothing");

    let nft = t.netns("nft");
    in_netns(&nft, || netfilter::create_nft_table("np_probe")).expect("create an nftables table");
    let mut expected = vec![format!("{}-nft: nftables table inet np_probe", t.prefix)];
    // Legacy iptables and conntrack only where the kernel has them: asking for them would load
    // them on a kernel that has them as modules.
    if Path::new("/proc/net/ip_tables_names").exists() {
        let ipt = t.netns("ipt");
        in_netns(&ipt, || netfilter::touch_iptables_table("filter")).expect("instantiate iptables' filter table");
        expected.push(format!("{}-ipt: iptables table filter (/proc/thread-self/net/ip_tables_names)", t.prefix));
    } else {
        eprintln!("no ip_tables in this kernel: its part of the check is not exercised");
    }
    if netfilter::conntrack_present() {
        let ct = t.netns("ct");
        let (a, b) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2));
        in_netns(&ct, || netfilter::create_conntrack_entry(a, 1234, b, 53)).expect("create a conntrack entry");
        expected.push(format!("{}-ct: conntrack entry (ctnetlink): proto 17 192.0.2.1:1234 -> 192.0.2.2:53", t.prefix));
    } else {
        eprintln!("no conntrack in this kernel: its part of the check is not exercised");
    }

    let found = t.netfilter_findings();
    eprintln!("the check found:\n  {}", found.join("\n  "));
    for line in &expected {
        assert!(found.contains(line), "the check missed `{line}`; it found:\n  {}", found.join("\n  "));
    }
    if netfilter::conntrack_present() {
        // The /proc view of the same entry, where the kernel has it.
        let ct = format!("{}-ct: ", t.prefix);
        assert!(found.iter().any(|f| f.starts_with(&ct) && f.contains("nf_conntrack_count is 1")), "{found:?}");
    }
    t.teardown();
}
