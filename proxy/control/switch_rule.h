/*
 * switch_rule.h - the switchover rules as data: what a session does in each phase of a
 * switch, by mode and by the side it stands on. Pure (no libuv, no globals), so the unit
 * tests read it as the table it is (tests/unit/test_switch_rule.c).
 *
 *   phase       session still on the old target      session already on the new target
 *   PREPARING   runs while its new upstream opens     atomic: held at its first boundary
 *   HOLDING     held at its boundary                  held
 *   MOVING      quiet: move; else held at boundary    runs
 *   GRADUAL     quiet: move; else runs to boundary    runs
 *   NONE        (left behind) held                    runs
 *
 * Past the deadline (drain_timeout) a session that is still not quiet is kicked: closed
 * with the "switched; reconnect" error. Atomic is the default mode: nothing reaches the new
 * store while anything may still reach the old one. GRADUAL has no global hold, and its
 * phases go PREPARING -> GRADUAL -> NONE.
 */
#ifndef SY_SWITCH_RULE_H
#define SY_SWITCH_RULE_H

typedef enum { SW_NONE = 0, SW_PREPARING, SW_HOLDING, SW_MOVING, SW_GRADUAL, SW_NPHASES } sw_phase_t;
typedef enum { SW_RUN = 0, SW_HOLD, SW_MOVE, SW_KICK } sw_act_t;
enum { SW_ATOMIC = 0, SW_MODE_GRADUAL = 1 };
enum { SW_SIDE_NEW = 0, SW_SIDE_OLD = 1 };

/* [mode][phase][side]: what a quiet session does (a not-quiet one that would move is held
 * at its next boundary instead: sw_act). */
static const sw_act_t sw_rule_table[2][SW_NPHASES][2] = {
    [SW_ATOMIC] = {
        [SW_NONE]      = { [SW_SIDE_NEW] = SW_RUN,  [SW_SIDE_OLD] = SW_HOLD },
        [SW_PREPARING] = { [SW_SIDE_NEW] = SW_HOLD, [SW_SIDE_OLD] = SW_RUN  },
        [SW_HOLDING]   = { [SW_SIDE_NEW] = SW_HOLD, [SW_SIDE_OLD] = SW_HOLD },
        [SW_MOVING]    = { [SW_SIDE_NEW] = SW_RUN,  [SW_SIDE_OLD] = SW_MOVE },
        [SW_GRADUAL]   = { [SW_SIDE_NEW] = SW_RUN,  [SW_SIDE_OLD] = SW_MOVE },
    },
    [SW_MODE_GRADUAL] = {
        [SW_NONE]      = { [SW_SIDE_NEW] = SW_RUN,  [SW_SIDE_OLD] = SW_HOLD },
        [SW_PREPARING] = { [SW_SIDE_NEW] = SW_RUN,  [SW_SIDE_OLD] = SW_RUN  },
        [SW_HOLDING]   = { [SW_SIDE_NEW] = SW_RUN,  [SW_SIDE_OLD] = SW_MOVE },
        [SW_MOVING]    = { [SW_SIDE_NEW] = SW_RUN,  [SW_SIDE_OLD] = SW_MOVE },
        [SW_GRADUAL]   = { [SW_SIDE_NEW] = SW_RUN,  [SW_SIDE_OLD] = SW_MOVE },
    },
};

/* What one session does now. quiet: it stands at a boundary with nothing in flight.
 * past_deadline: the switch's deadline has passed. */
static inline sw_act_t sw_act(int mode, sw_phase_t phase, int side, int quiet, int past_deadline)
{
    if ((unsigned)phase >= SW_NPHASES || (mode != SW_ATOMIC && mode != SW_MODE_GRADUAL))
        return SW_HOLD;
    sw_act_t a = sw_rule_table[mode][phase][side ? SW_SIDE_OLD : SW_SIDE_NEW];
    if (a == SW_MOVE && !quiet)
        return past_deadline ? SW_KICK : (mode == SW_MODE_GRADUAL || phase == SW_GRADUAL ? SW_RUN : SW_HOLD);
    return a;
}

/* Must a session that reached a boundary stop there? (It stops to be held or moved.) */
static inline int sw_stops_at_boundary(int mode, sw_phase_t phase, int side)
{
    return sw_act(mode, phase, side, 1, 0) != SW_RUN;
}

#endif
