use super::*;

#[test]
fn stat_fields_are_counted_after_the_last_parenthesis_of_the_name() {
    // A command name with a space and a parenthesis of its own, then fields 3..=24.
    let text = "4242 (tokio (rt) 1) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                250 75 0 0 20 0 17 0 123456 987654321 5000 18446744073709551615";
    assert_eq!(
        parse_stat(text),
        Some(Stat {
            cpu_ticks: 325,
            threads: 17,
            start_ticks: 123456,
            virtual_bytes: 987654321,
            resident_pages: 5000,
        })
    );
}

#[test]
fn truncated_or_garbled_stat_is_none() {
    assert_eq!(parse_stat("4242 (x) S 1 2 3"), None);
    assert_eq!(parse_stat("no parenthesis at all"), None);
    let garbled = "1 (x) S 1 1 1 0 -1 0 0 0 0 0 ten 5 0 0 20 0 1 0 1 1 1";
    assert_eq!(parse_stat(garbled), None);
}

#[test]
fn the_soft_open_files_limit_is_read_and_unlimited_is_none() {
    let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                  Max cpu time              unlimited            unlimited            seconds   \n\
                  Max open files            1024                 524288               files     \n";
    assert_eq!(parse_max_open_files(limits), Some(1024));
    let unlimited = "Max open files            unlimited            unlimited            files\n";
    assert_eq!(parse_max_open_files(unlimited), None);
}

#[test]
fn boot_time_comes_from_btime() {
    assert_eq!(
        parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
        Some(1_700_000_000)
    );
    assert_eq!(parse_boot_time("cpu 1 2 3\n"), None);
}

#[cfg(target_os = "linux")]
#[test]
fn this_process_parses() {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("procfs");
    let parsed = parse_stat(&stat).expect("own stat parses");
    assert!(
        parsed.threads >= 1 && parsed.resident_pages > 0,
        "{parsed:?}"
    );
}
