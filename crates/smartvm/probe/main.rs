//! The smartvm probe guest: a tiny bare-metal x86_64 kernel that reports over the serial console
//! what the VM looks like from inside, and performs the actions asked for on its command line.
//!
//! Protocol (one line each, every line starts with `smartvm-probe `, values quoted when needed):
//! `boot cmdline=…`, one `device …` per virtio-mmio device, the action results, then `done`.
//! The authoritative description is `ProbeReport` in the smartvm library.
#![no_std]
#![no_main]

mod boot;
#[macro_use]
mod console;
mod virtio;
mod vsock;

use console::Value;
use virtio::{block_io, Mmio};

const MAX_DEVICES: usize = 16;

#[derive(Clone, Copy)]
struct Device {
    mmio: Mmio,
    irq: u32,
    id: u32,
}

/// Ring-3 entry, called by the boot stub with the physical address of Firecracker's zero page.
#[no_mangle]
extern "C" fn probe_main(boot_params: u64) -> ! {
    let cmdline = command_line(boot_params as usize);
    report!("boot cmdline={}", Value(cmdline));

    let mut devices = [Device { mmio: Mmio { base: 0 }, irq: 0, id: 0 }; MAX_DEVICES];
    let mut count = 0;
    for token in cmdline.split(|&b| b == b' ') {
        if let Some((base, irq)) = parse_mmio_token(token) {
            if count < MAX_DEVICES {
                let mmio = Mmio { base };
                let id = if mmio.is_virtio() { mmio.device_id() } else { 0 };
                devices[count] = Device { mmio, irq, id };
                count += 1;
            }
        }
    }
    let devices = &devices[..count];
    for dev in devices {
        report_device(dev);
    }

    let mut halt = false;
    for token in cmdline.split(|&b| b == b' ') {
        if let Some(arg) = token.strip_prefix(b"probe.read=") {
            block_action(devices, arg, false);
        } else if let Some(arg) = token.strip_prefix(b"probe.write=") {
            block_action(devices, arg, true);
        } else if let Some(arg) = token.strip_prefix(b"probe.watch=") {
            watch_forever(devices, arg);
        } else if let Some(arg) = token.strip_prefix(b"probe.touch=") {
            touch_memory(parse_u64(arg).unwrap_or(0));
        } else if let Some(arg) = token.strip_prefix(b"probe.count=") {
            count_forever(parse_u64(arg).unwrap_or(100));
        } else if let Some(arg) = token.strip_prefix(b"probe.vsock=") {
            vsock_action(devices, arg);
        } else if let Some(arg) = token.strip_prefix(b"probe.lines=") {
            for n in 0..parse_u64(arg).unwrap_or(0) {
                report!("line n={}", n);
            }
        } else if let Some(arg) = token.strip_prefix(b"probe.exit=") {
            // A workload's end, for runtimes that report one (the containerd shim): the code
            // goes to the console, then the VM ends as a reset does.
            report!("exit code={}", parse_u64(arg).unwrap_or(0) & 0xff);
            reset();
        } else if token == b"probe.echo" {
            echo_forever();
        } else if token == b"probe.halt" {
            halt = true;
        }
    }
    report!("done");
    if halt {
        park();
    }
    reset()
}

fn command_line(boot_params: usize) -> &'static [u8] {
    // SAFETY: Firecracker's zero page is identity-mapped; offsets are the Linux boot protocol's.
    unsafe {
        let lo = core::ptr::read_volatile((boot_params + 0x228) as *const u32) as usize;
        let hi = core::ptr::read_volatile((boot_params + 0x0c8) as *const u32) as usize;
        let size = core::ptr::read_volatile((boot_params + 0x238) as *const u32) as usize;
        let ptr = (hi << 32) | lo;
        if ptr == 0 || size == 0 {
            return &[];
        }
        let all = core::slice::from_raw_parts(ptr as *const u8, size.min(4096));
        let end = all.iter().position(|&b| b == 0).unwrap_or(all.len());
        &all[..end]
    }
}

/// `virtio_mmio.device=4K@0xd0000000:5` → (0xd0000000, 5).
fn parse_mmio_token(token: &[u8]) -> Option<(usize, u32)> {
    let rest = token.strip_prefix(b"virtio_mmio.device=")?;
    let at = rest.iter().position(|&b| b == b'@')?;
    let rest = rest[at + 1..].strip_prefix(b"0x")?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let base = parse_hex(&rest[..colon])? as usize;
    let irq_end = rest[colon + 1..].iter().position(|&b| b == b':').map_or(rest.len(), |p| colon + 1 + p);
    let irq = parse_u64(&rest[colon + 1..irq_end])? as u32;
    Some((base, irq))
}

fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v = 0u64;
    for &b in s {
        let d = (b as char).to_digit(16)? as u64;
        v = (v << 4) | d;
    }
    Some(v)
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut v = 0u64;
    for &b in s {
        v = v * 10 + (b as char).to_digit(10)? as u64;
    }
    Some(v)
}

fn type_name(id: u32) -> &'static str {
    match id {
        1 => "net",
        2 => "block",
        4 => "entropy",
        5 => "balloon",
        19 => "vsock",
        _ => "other",
    }
}

fn report_device(dev: &Device) {
    let (base, irq, id) = (dev.mmio.base, dev.irq, dev.id);
    let ty = type_name(id);
    if id == 0 {
        report!("device addr={:#x} irq={} type=other virtio=no", base, irq);
        return;
    }
    match ty {
        "block" => report!(
            "device addr={:#x} irq={} type=block version={} capacity={} ro={}",
            base,
            irq,
            dev.mmio.version(),
            dev.mmio.block_capacity(),
            dev.mmio.block_read_only() as u8
        ),
        "net" => match dev.mmio.net_mac() {
            Some(m) => report!(
                "device addr={:#x} irq={} type=net version={} mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                base,
                irq,
                dev.mmio.version(),
                m[0],
                m[1],
                m[2],
                m[3],
                m[4],
                m[5]
            ),
            None => report!("device addr={:#x} irq={} type=net version={}", base, irq, dev.mmio.version()),
        },
        "vsock" => report!(
            "device addr={:#x} irq={} type=vsock version={} cid={}",
            base,
            irq,
            dev.mmio.version(),
            dev.mmio.vsock_cid()
        ),
        _ => report!("device addr={:#x} irq={} type={} version={} id={}", base, irq, ty, dev.mmio.version(), id),
    }
}

/// `<drive>:<sector>` (read) or `<drive>:<sector>:<text>` (write); `<drive>` is the index among
/// block devices in command-line order, which is the VM config's drive order.
fn block_action(devices: &[Device], arg: &[u8], write: bool) {
    let action = if write { "write" } else { "read" };
    let mut parts = arg.splitn(3, |&b| b == b':');
    let drive = parts.next().and_then(parse_u64);
    let sector = parts.next().and_then(parse_u64);
    let text = parts.next().unwrap_or(b"");
    let (Some(drive), Some(sector)) = (drive, sector) else {
        report!("{} arg={} status=bad-argument", action, Value(arg));
        return;
    };
    let Some(dev) = devices.iter().filter(|d| d.id == 2).nth(drive as usize) else {
        report!("{} drive={} sector={} status=no-device", action, drive, sector);
        return;
    };
    let mut buf = [0u8; 512];
    if write {
        let n = text.len().min(512);
        buf[..n].copy_from_slice(&text[..n]);
    }
    let result = block_io(dev.mmio, drive as usize, sector, write, &mut buf);
    if write || !matches!(result, virtio::BlockResult::Ok) {
        report!("{} drive={} sector={} status={}", action, drive, sector, result.as_str());
    } else {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(64).min(64);
        report!("read drive={} sector={} status=ok data={}", drive, sector, Value(&buf[..end]));
    }
}

/// `probe.vsock=PORT`: serves the guest protocol's hello/echo/health/exec on PORT of the first vsock
/// device, forever. Without a device (or a port) it reports why and goes on.
fn vsock_action(devices: &[Device], arg: &[u8]) {
    let Some(port) = parse_u64(arg).filter(|&p| p <= u32::MAX as u64) else {
        report!("vsock arg={} status=bad-argument", Value(arg));
        return;
    };
    match devices.iter().find(|d| d.id == 19) {
        Some(dev) => vsock::serve(dev.mmio, port as u32),
        None => report!("vsock port={} status=no-device", port),
    }
}

/// `<drive>:<sector>:<ms>`: re-reads the sector every `ms` and reports a `read` line whenever
/// its content changes (hot-swapped backing files are seen from inside the guest).
fn watch_forever(devices: &[Device], arg: &[u8]) -> ! {
    let mut parts = arg.splitn(3, |&b| b == b':');
    let (drive, sector) = (parts.next().and_then(parse_u64), parts.next().and_then(parse_u64));
    let interval = match parts.next() {
        None => Some(20),
        Some(ms) => parse_u64(ms),
    };
    // A malformed argument is reported, never read as sector 0.
    let (Some(drive), Some(sector), Some(interval)) = (drive, sector, interval) else {
        report!("read arg={} status=bad-argument", Value(arg));
        park();
    };
    let khz = tsc_khz();
    let ticks = khz * interval.max(1);
    let Some(dev) = devices.iter().filter(|d| d.id == 2).nth(drive as usize) else {
        report!("read drive={} sector={} status=no-device", drive, sector);
        park();
    };
    let mut last = [0u8; 64];
    let mut first = true;
    loop {
        let mut buf = [0u8; 512];
        let result = block_io(dev.mmio, drive as usize, sector, false, &mut buf);
        let mut head = [0u8; 64];
        head.copy_from_slice(&buf[..64]);
        if !matches!(result, virtio::BlockResult::Ok) {
            report!("read drive={} sector={} status={}", drive, sector, result.as_str());
        } else if first || head != last {
            let end = head.iter().position(|&b| b == 0).unwrap_or(64);
            report!("read drive={} sector={} status=ok data={}", drive, sector, Value(&head[..end]));
            last = head;
            first = false;
        }
        wait_ticks(ticks, khz);
    }
}

/// Waits `ticks` TSC ticks, checking the keyboard controller every millisecond: Firecracker's
/// `SendCtrlAltDel` queues key codes there, and the probe answers it like an OS shutting down
/// (prints `ctrl-alt-del` and resets), so smartvm's graceful stop step works on it.
fn wait_ticks(ticks: u64, ms_ticks: u64) {
    let start = rdtsc();
    let mut next_check = 0;
    loop {
        let elapsed = rdtsc().wrapping_sub(start);
        if elapsed >= ticks {
            return;
        }
        if elapsed >= next_check {
            check_ctrl_alt_del();
            next_check = elapsed + ms_ticks;
        }
        core::hint::spin_loop();
    }
}

/// Resets (printing `ctrl-alt-del`) if the keyboard controller holds key codes: Firecracker's
/// `SendCtrlAltDel` queues them there.
fn check_ctrl_alt_del() {
    if inb(0x64) & 1 != 0 {
        for _ in 0..16 {
            if inb(0x64) & 1 == 0 {
                break;
            }
            inb(0x60);
        }
        report!("ctrl-alt-del");
        reset();
    }
}

/// Parks the vCPU in a ring-3 loop (still answering Ctrl-Alt-Del). A trap back to ring 0 for
/// `hlt` is not delivered by every hypervisor — `kvm_pvm` turns `int n` and `syscall` from guest
/// ring 3 into a triple fault — so parking costs a spinning vCPU thread.
fn park() -> ! {
    let khz = tsc_khz();
    loop {
        wait_ticks(khz * 1000, khz);
    }
}

/// Echoes each line typed on the serial console (COM1's receiver, polled every millisecond)
/// as `echo line=<text>`, forever: proves that console input reaches the guest.
fn echo_forever() -> ! {
    const COM1: u16 = 0x3f8;
    let khz = tsc_khz();
    report!("echo ready");
    let mut line = [0u8; 128];
    let mut len = 0;
    loop {
        // Line status bit 0: a received byte is waiting.
        while inb(COM1 + 5) & 1 != 0 {
            let b = inb(COM1);
            if b == b'\n' || b == b'\r' {
                if len > 0 {
                    report!("echo line={}", Value(&line[..len]));
                    len = 0;
                }
            } else if len < line.len() {
                line[len] = b;
                len += 1;
            }
        }
        wait_ticks(khz, khz);
    }
}

/// Prints `count n=<n>` every `ms` milliseconds forever (pause/snapshot tests watch it).
/// Writes every 4 KiB page of guest memory above the probe's own image, up to `mib` MiB (the
/// VM's memory size: above it nothing is mapped), so that each page holds data of its own (a
/// snapshot then has the whole memory to save, and clones the whole memory to share).
fn touch_memory(mib: u64) {
    extern "C" {
        static __probe_end: u8;
    }
    // SAFETY: only the symbol's address is taken; the linker script defines it.
    let image_end = unsafe { core::ptr::addr_of!(__probe_end) } as u64;
    let mut page = (image_end + 4095) & !4095;
    let mut pages = 0u64;
    while page < mib << 20 {
        // SAFETY: identity-mapped guest RAM above the image, used by nothing else.
        unsafe { core::ptr::write_volatile(page as *mut u64, 0xa5a5_0000_0000_0000 | page) };
        page += 4096;
        pages += 1;
    }
    report!("touch pages={}", pages);
}

fn count_forever(ms: u64) -> ! {
    let khz = tsc_khz();
    report!("clock tsc_khz={}", khz);
    let ticks = khz * ms.max(1);
    let mut n: u64 = 0;
    loop {
        report!("count n={}", n);
        n += 1;
        wait_ticks(ticks, khz);
    }
}

fn rdtsc() -> u64 {
    // SAFETY: rdtsc is allowed in ring 3 (CR4.TSD clear).
    unsafe { core::arch::x86_64::_rdtsc() }
}

fn outb(port: u16, v: u8) {
    // SAFETY: IOPL=3 and an all-open I/O bitmap; these are emulated legacy ports.
    unsafe { core::arch::asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack)) }
}

fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as for outb.
    unsafe { core::arch::asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack)) };
    v
}

/// TSC ticks in 10 ms of PIT channel 2 (one-shot, gate via port 0x61), if the PIT answers.
fn pit_calibrate_khz() -> Option<u64> {
    const PIT_HZ: u64 = 1_193_182;
    let count = (PIT_HZ / 100) as u16;
    outb(0x61, (inb(0x61) & !0x02) | 0x01); // gate on, speaker off
    outb(0x43, 0b1011_0000); // channel 2, lobyte/hibyte, mode 0
    outb(0x42, count as u8);
    outb(0x42, (count >> 8) as u8);
    let start = rdtsc();
    let mut polls: u64 = 0;
    while inb(0x61) & 0x20 == 0 {
        polls += 1;
        if polls > 10_000_000 {
            return None;
        }
    }
    let ticks = rdtsc().wrapping_sub(start);
    (ticks > 1000).then_some(ticks / 10)
}

/// TSC frequency in kHz: measured against the PIT, else CPUID (0x15, 0x16, the hypervisor
/// leaf), else 2 GHz.
fn tsc_khz() -> u64 {
    use core::arch::x86_64::__cpuid;
    if let Some(khz) = pit_calibrate_khz() {
        return khz;
    }
    let max = __cpuid(0).eax;
    if max >= 0x15 {
        let l = __cpuid(0x15);
        if l.eax != 0 && l.ebx != 0 && l.ecx != 0 {
            return l.ecx as u64 * l.ebx as u64 / l.eax as u64 / 1000;
        }
    }
    if max >= 0x16 {
        let l = __cpuid(0x16);
        if l.eax & 0xffff != 0 {
            return (l.eax & 0xffff) as u64 * 1000;
        }
    }
    let hv = __cpuid(0x4000_0000);
    if hv.eax >= 0x4000_0010 {
        let l = __cpuid(0x4000_0010);
        if l.eax != 0 {
            return l.eax as u64;
        }
    }
    2_000_000
}

/// Pulses the i8042 reset line: Firecracker ends the VM and exits 0.
fn reset() -> ! {
    // SAFETY: IOPL=3; port 0x64 is the emulated i8042.
    unsafe { core::arch::asm!("out dx, al", in("dx") 0x64u16, in("al") 0xfeu8, options(nomem, nostack)) };
    loop {
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    report!("panic");
    reset()
}

/// libcore is shipped built with unwinding and references this symbol; it is never called.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

#[no_mangle]
unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    core::arch::asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _, options(nostack));
    dst
}

#[no_mangle]
unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize + n) {
        return memcpy(dst, src, n);
    }
    core::arch::asm!(
        "std", "rep movsb", "cld",
        inout("rcx") n => _, inout("rdi") dst.add(n - 1) => _, inout("rsi") src.add(n - 1) => _,
        options(nostack)
    );
    dst
}

#[no_mangle]
unsafe extern "C" fn memset(dst: *mut u8, val: i32, n: usize) -> *mut u8 {
    core::arch::asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") val as u8, options(nostack));
    dst
}

#[no_mangle]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        let (x, y) = (core::ptr::read_volatile(a.add(i)), core::ptr::read_volatile(b.add(i)));
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}

#[no_mangle]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    memcmp(a, b, n)
}
