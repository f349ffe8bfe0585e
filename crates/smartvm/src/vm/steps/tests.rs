//! The step lists as data.

use super::*;

#[test]
fn restore_is_start_with_steps_swapped() {
    use Step::*;
    let file = start_steps(BootPath::ConfigFile);
    assert_eq!(file[file.len() - 2..], [ConfirmBoot, WaitForApi], "no polling for the socket of a booted VM");
    let spawn = |s: &[Step]| s.iter().position(|s| *s == Spawn).unwrap();
    assert!(file[..spawn(&file)].contains(&WriteConfigFile) && file[..spawn(&file)].contains(&PrepareOutputFiles));
    assert!(!file.contains(&Configure) && !file.contains(&InstanceStart) && !file.contains(&LearnVersion));
    let start = start_steps(BootPath::Api);
    assert_eq!(start.first(), Some(&CheckHost));
    assert_eq!(start.last(), Some(&InstanceStart));
    let restore = restore_steps();
    assert_eq!(restore[..3], [CheckHost, CreateRuntimeDir, MaterializeMemory]);
    assert!(restore.contains(&LoadSnapshot) && !restore.contains(&Configure) && !restore.contains(&InstanceStart));
    assert_eq!(restore.len(), start.len(), "one step added, one removed");
    let host_steps = |s: &[Step]| s.iter().filter(|s| **s != MaterializeMemory && **s != LoadSnapshot).count();
    assert_eq!(host_steps(&restore), host_steps(&start) - 2);
}

#[test]
fn the_api_off_is_the_config_file_boot_without_waiting_for_a_socket() {
    let mut file = start_steps(BootPath::ConfigFile);
    assert_eq!(file.pop(), Some(Step::WaitForApi));
    assert_eq!(start_steps(BootPath::NoApi), file);
}
