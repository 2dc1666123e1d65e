/*
 * test_switch_rule.c - the switchover rule table (proxy/control/switch_rule.h), read as
 * the table the design writes down: what a session does, by mode, phase and side, quiet
 * or not, before and after the deadline.
 */
#include "proxy/control/switch_rule.h"
#include "tests/unit/unit.h"

typedef struct {
    int        mode;
    sw_phase_t phase;
    int        side, quiet, past_deadline;
    sw_act_t   want;
} row_t;

#define OLD SW_SIDE_OLD
#define NEW SW_SIDE_NEW
#define A   SW_ATOMIC
#define G   SW_MODE_GRADUAL

static const row_t rows[] = {
    /* atomic: preparing - the old side keeps working, the new side waits at its first boundary */
    { A, SW_PREPARING, OLD, 1, 0, SW_RUN },  { A, SW_PREPARING, OLD, 0, 0, SW_RUN },
    { A, SW_PREPARING, NEW, 1, 0, SW_HOLD }, { A, SW_PREPARING, NEW, 0, 0, SW_HOLD },
    /* atomic: holding - everyone waits */
    { A, SW_HOLDING, OLD, 1, 0, SW_HOLD },   { A, SW_HOLDING, OLD, 0, 0, SW_HOLD },
    { A, SW_HOLDING, NEW, 1, 0, SW_HOLD },   { A, SW_HOLDING, NEW, 0, 0, SW_HOLD },
    /* atomic: moving - quiet old sessions move, the rest wait for their boundary; new runs */
    { A, SW_MOVING, OLD, 1, 0, SW_MOVE },    { A, SW_MOVING, OLD, 0, 0, SW_HOLD },
    { A, SW_MOVING, NEW, 1, 0, SW_RUN },     { A, SW_MOVING, NEW, 0, 0, SW_RUN },
    /* the deadline: whoever is still not quiet is kicked, quiet ones still move */
    { A, SW_MOVING, OLD, 0, 1, SW_KICK },    { A, SW_MOVING, OLD, 1, 1, SW_MOVE },
    { A, SW_MOVING, NEW, 0, 1, SW_RUN },
    /* no switch: a session left on the old target stops; the new side runs */
    { A, SW_NONE, OLD, 1, 0, SW_HOLD },      { A, SW_NONE, NEW, 0, 0, SW_RUN },
    /* gradual: nobody is held for others; each old session moves when it is quiet */
    { G, SW_PREPARING, OLD, 1, 0, SW_RUN },  { G, SW_PREPARING, NEW, 1, 0, SW_RUN },
    { G, SW_GRADUAL, OLD, 1, 0, SW_MOVE },   { G, SW_GRADUAL, OLD, 0, 0, SW_RUN },
    { G, SW_GRADUAL, NEW, 0, 0, SW_RUN },    { G, SW_GRADUAL, OLD, 0, 1, SW_KICK },
    /* an impossible phase or mode holds rather than guesses */
    { A, (sw_phase_t)99, OLD, 1, 0, SW_HOLD }, { 7, SW_MOVING, OLD, 1, 0, SW_HOLD },
};

int main(void)
{
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const row_t *r = &rows[i];
        sw_act_t got = sw_act(r->mode, r->phase, r->side, r->quiet, r->past_deadline);
        CHECK_MSG(got == r->want, "row %zu: mode %d phase %d side %d quiet %d deadline %d: got %d want %d", i,
                  r->mode, (int)r->phase, r->side, r->quiet, r->past_deadline, (int)got, (int)r->want);
    }
    /* Who stops at a boundary: the old side in every phase but PREPARING (atomic); the
     * new side only while an atomic switch has not yet moved everyone. */
    CHECK(!sw_stops_at_boundary(A, SW_PREPARING, OLD));
    CHECK(sw_stops_at_boundary(A, SW_HOLDING, OLD));
    CHECK(sw_stops_at_boundary(A, SW_MOVING, OLD));
    CHECK(sw_stops_at_boundary(A, SW_PREPARING, NEW));
    CHECK(sw_stops_at_boundary(A, SW_HOLDING, NEW));
    CHECK(!sw_stops_at_boundary(A, SW_MOVING, NEW));
    CHECK(!sw_stops_at_boundary(A, SW_NONE, NEW));
    CHECK(sw_stops_at_boundary(G, SW_GRADUAL, OLD));
    CHECK(!sw_stops_at_boundary(G, SW_GRADUAL, NEW));
    CHECK(!sw_stops_at_boundary(G, SW_PREPARING, NEW));
    /* With no switch, in either mode, a session stops exactly when it stands on the old
     * side: sy_route_should_hold's shortcut for SW_NONE reads the side alone. */
    for (int m = 0; m < 2; m++)
        for (int s = 0; s < 2; s++)
            CHECK(sw_stops_at_boundary(m, SW_NONE, s) == s);
    /* Every cell of the table is one of the three steady actions (KICK only comes from
     * the deadline). */
    for (int m = 0; m < 2; m++)
        for (int p = 0; p < SW_NPHASES; p++)
            for (int s = 0; s < 2; s++)
                CHECK(sw_rule_table[m][p][s] == SW_RUN || sw_rule_table[m][p][s] == SW_HOLD ||
                      sw_rule_table[m][p][s] == SW_MOVE);
    return unit_done("test_switch_rule");
}
