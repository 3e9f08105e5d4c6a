/*
 * x86-TSO memory for the SPIN models of docs/model/ (included by notification.pml and
 * packed-notification.pml, which define FIELDS, the number of shared fields, first).
 *
 * Each thread's stores go into its FIFO store buffer (CAP entries); a separate StoreBuffer
 * process drains the oldest into memory at any moment; a thread reads its own buffered stores
 * first; a fence (atomicMemoryFence(.sequentiallyConsistent), or any system call) waits until
 * the thread's buffer is empty. Store->load reordering is the one reordering that breaks a
 * "publish, then check the peer's flag" handshake, and the one TSO allows.
 *
 * The including proctypes declare the scratch variable `i`, which load uses.
 */

#define CAP 3            /* store-buffer entries per thread */

#define DRIVER 0
#define DEVICE 1

byte mem[FIELDS];
byte bufField[2 * CAP];
byte bufValue[2 * CAP];
byte bufLength[2];

/* A store: into the thread's store buffer (blocks while the buffer is full). */
inline store(who, field, value) {
    atomic {
        bufLength[who] < CAP ->
        bufField[who * CAP + bufLength[who]] = field;
        bufValue[who * CAP + bufLength[who]] = value;
        bufLength[who]++
    }
}

/* A load: the newest buffered store to the field, else memory. */
inline load(who, field, result) {
    atomic {
        result = mem[field];
        i = 0;
        do
        :: i < bufLength[who] ->
            if
            :: bufField[who * CAP + i] == field -> result = bufValue[who * CAP + i]
            :: else -> skip
            fi;
            i++
        :: else -> break
        od;
        i = 0
    }
}

/* atomicMemoryFence(ordering: .sequentiallyConsistent), or any system call. */
inline fence(who) {
    bufLength[who] == 0
}

/* Drains one thread's store buffer, oldest first, whenever it likes. */
proctype StoreBuffer(byte who) {
    byte j;
end:
    do
    :: atomic {
        bufLength[who] > 0 ->
        mem[bufField[who * CAP]] = bufValue[who * CAP];
        j = 1;
        do
        :: j < bufLength[who] ->
            bufField[who * CAP + j - 1] = bufField[who * CAP + j];
            bufValue[who * CAP + j - 1] = bufValue[who * CAP + j];
            j++
        :: else -> break
        od;
        bufLength[who]--;
        bufField[who * CAP + bufLength[who]] = 0;
        bufValue[who * CAP + bufLength[who]] = 0;
        j = 0
    }
    od
}
