//! Serial console output (COM1, port 0x3f8) and the line protocol's value formatting.

use core::fmt;

/// Writes bytes to COM1. Firecracker's 8250 needs no setup and copies the bytes to its stdout.
pub struct Serial;

impl Serial {
    pub fn byte(b: u8) {
        // SAFETY: IOPL=3 was granted by the boot stub; port 0x3f8 is the emulated UART.
        unsafe { core::arch::asm!("out dx, al", in("dx") 0x3f8u16, in("al") b, options(nomem, nostack)) }
    }
}

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            Serial::byte(b);
        }
        Ok(())
    }
}

/// A protocol value: printed bare when it is a plain token, else in double quotes with `"` and
/// `\` escaped and non-printable bytes shown as `\xHH`.
pub struct Value<'a>(pub &'a [u8]);

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = !self.0.is_empty()
            && self.0.iter().all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\' && b != b'=');
        if plain {
            for &b in self.0 {
                fmt::Write::write_char(f, b as char)?;
            }
            return Ok(());
        }
        f.write_str("\"")?;
        for &b in self.0 {
            match b {
                b'"' => f.write_str("\\\"")?,
                b'\\' => f.write_str("\\\\")?,
                0x20..=0x7e => fmt::Write::write_char(f, b as char)?,
                _ => write!(f, "\\x{:02x}", b)?,
            }
        }
        f.write_str("\"")
    }
}

/// Prints one protocol line: `smartvm-probe <args>`.
#[macro_export]
macro_rules! report {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = write!($crate::console::Serial, "smartvm-probe ");
        let _ = write!($crate::console::Serial, $($arg)*);
        let _ = $crate::console::Serial.write_str("\n");
    }};
}
