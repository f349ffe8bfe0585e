//! Ring-0 entry stub of the probe guest.
//!
//! Some KVM hosts (paravirtual `kvm_pvm`) emulate guest ring 0 instruction by instruction and
//! without x87/SSE, so this stub does the least possible in ring 0 and contains no compiler
//! output: it installs page tables built at assembly time (identity map of the first 4 GiB, so
//! virtio-mmio windows above 3 GiB are reachable, user-accessible), enables SSE for ring 3, loads
//! a GDT with user segments and a TSS whose I/O bitmap opens every port (IOPL alone is not
//! honoured by every hypervisor), and drops to ring 3 with IOPL=3 so port I/O keeps working. On hardware KVM the same
//! image runs unchanged.

core::arch::global_asm!(
    r#"
.section .text.boot, "ax"
.global _start
.code64
_start:
    cli
    mov r15, rsi
    lea rsp, [rip + boot_stack_top]

    lea rax, [rip + pml4]
    mov cr3, rax

    mov rax, cr0
    or rax, 0x22
    and rax, -13
    mov cr0, rax
    mov rax, cr4
    or rax, 0x600
    mov cr4, rax

    lea rax, [rip + tss]
    lea rdi, [rip + gdt_tss]
    mov word ptr [rdi], 104 + 8192
    mov [rdi + 2], ax
    shr rax, 16
    mov [rdi + 4], al
    mov byte ptr [rdi + 5], 0x89
    mov byte ptr [rdi + 6], 0
    mov [rdi + 7], ah
    shr rax, 16
    mov [rdi + 8], eax
    mov dword ptr [rdi + 12], 0

    lgdt [rip + gdt_ptr]
    mov ax, 0x28
    ltr ax
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax

    pushfq
    or qword ptr [rsp], 0x3000
    popfq

    mov rdi, r15
    lea rax, [rip + user_stack_top]
    sub rax, 8
    push 0x23
    push rax
    push 0x3002
    push 0x1b
    lea rax, [rip + probe_main]
    push rax
    iretq

.section .data.pagetables, "aw"
.align 4096
pml4:
    .quad pdpt + 0x7
    .fill 511, 8, 0
.align 4096
pdpt:
    .quad pd + 0x0007
    .quad pd + 0x1007
    .quad pd + 0x2007
    .quad pd + 0x301f
    .fill 508, 8, 0
.align 4096
pd:
    .set page, 0
    .rept 1536
    .quad (page << 21) | 0x87
    .set page, page + 1
    .endr
    .rept 512
    .quad (page << 21) | 0x9f
    .set page, page + 1
    .endr

.section .data, "aw"
.align 16
gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00affa000000ffff
    .quad 0x00cff2000000ffff
gdt_tss:
    .quad 0
    .quad 0
gdt_end:
.align 16
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt
.align 16
tss:
    .long 0
    .quad boot_stack_top
    .fill 11, 8, 0
    .word 0
    .word 104
    .skip 8192
    .byte 0xff

.section .bss, "aw", @nobits
.align 4096
boot_stack:
    .skip 16384
boot_stack_top:
.align 16
user_stack:
    .skip 131072
user_stack_top:
"#
);
