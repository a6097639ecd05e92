"""The matrix covers the catalog: a deployment added without a served case fails here."""

from __future__ import annotations

import importlib

from tests.served_support import catalog_names

#: Every catalog deployment and the served cases (``module::test``) that start it.
MATRIX: dict[str, list[str]] = {
    "staged-deploy/staged-deploy": [
        "test_deploy_matrix::test_staged_deploy_auto_ships_to_production",
        "test_deploy_matrix::test_staged_deploy_manual_approved_through_the_form",
        "test_deploy_matrix::test_staged_deploy_manual_rejected_through_the_form",
        "test_data_matrix::test_ci_webhook_push_and_release_workflow_start_staged_deploys",
        "test_data_matrix::test_ci_webhook_runs_complete_and_ship_their_images",
    ],
    "hotfix/hotfix": [
        "test_deploy_matrix::test_hotfix_then_rollback_returns_to_the_previous_image"
    ],
    "rollback/rollback": [
        "test_deploy_matrix::test_hotfix_then_rollback_returns_to_the_previous_image"
    ],
    "scale/scale": ["test_deploy_matrix::test_scale_staging"],
    "restart/restart": ["test_deploy_matrix::test_restart_staging"],
    "backup-database/backup-daily": [
        "test_data_matrix::test_backup_daily_streams_a_complete_backup_to_s3"
    ],
    "restore-database/restore": [
        "test_data_matrix::test_restore_into_scratch_verifies_the_newest_backup"
    ],
    "base-backup/base-backup-daily": [
        "test_pitr_matrix::test_a_base_backup_then_a_restore_to_a_second"
    ],
    "restore-to-time/restore-to-time": [
        "test_pitr_matrix::test_a_base_backup_then_a_restore_to_a_second",
        "test_pitr_matrix::test_a_moment_in_the_future_fails_before_anything_is_read",
    ],
    "restore-drill/restore-drill-weekly": [
        "test_data_matrix::test_restore_drill_weekly_records_rto_and_rpo"
    ],
    "migrate-database/migrate-database": [
        "test_data_matrix::test_migrate_database_dry_run_then_apply",
        "test_schema_gate::test_a_production_migration_waits_for_a_dba",
        "test_schema_gate::test_a_rejected_production_migration_changes_nothing",
    ],
    "rotate-credentials/rotate-credentials-monthly": [
        "test_data_matrix::test_rotate_credentials_monthly",
        "test_rotation_monthly::test_the_scheduled_rotation_refuses_no_new_connection",
        "test_rotation_monthly::test_single_user_refuses_new_connections_until_the_rotation_finishes",
    ],
    "stack-smoke/stack-smoke": ["test_data_matrix::test_stack_smoke"],
    "access-audit/access-audit-quarterly": [
        "test_access_runbooks::test_access_audit_finds_seeded_drift_and_revokes_nothing"
    ],
    "access-log-review/access-log-review-monthly": [
        "test_access_runbooks::test_access_log_review_finds_repeated_failed_logins"
    ],
    "capacity-report/capacity-report-weekly": [
        "test_capacity_weekly::test_the_weekly_report_forecasts_the_backfilled_disk"
    ],
    "certificate-check/certificate-check": [
        "test_certificates::test_a_certificate_expiring_in_5_days_pages_and_renewal_clears_it",
        "test_certificates::test_an_endpoint_that_is_down_is_reported",
        "test_certificates::test_the_check_can_start_the_renewal_itself",
    ],
    "renew-certificate/renew-certificate": [
        "test_certificates::test_a_certificate_expiring_in_5_days_pages_and_renewal_clears_it",
        "test_certificates::test_a_refused_secret_write_leaves_the_old_certificate_served",
        "test_certificates::test_a_missing_ca_is_refused_before_any_change",
        "test_certificates::test_the_check_can_start_the_renewal_itself",
        "test_certificates::test_a_certificate_expiry_alert_renews_the_endpoint_its_instance_names",
    ],
    "incident/incident": [
        "test_incident_matrix::test_alertmanager_group_pages_escalates_and_closes",
        "test_incident_matrix::test_a_failing_change_opens_an_incident",
        "test_incident_matrix::test_a_flapping_group_is_one_incident_paged_once",
    ],
    "one-pod-down/one-pod-down": [
        "test_triage_pods::test_one_pod_down_is_replaced_and_its_termination_recorded",
        "test_triage_pods::test_one_pod_down_scales_out_when_the_others_are_overloaded",
        "test_triage_pods::test_one_pod_down_refuses_a_pod_that_does_not_exist",
    ],
    "traffic-spike/traffic-spike": [
        "test_triage_pods::test_traffic_spike_scales_up_within_max_and_the_load_is_balanced",
        "test_triage_pods::test_traffic_spike_at_max_replicas_changes_nothing_and_escalates",
        "test_triage_pods::test_traffic_spike_refuses_bad_replica_counts",
        "test_triage_pods::test_scale_back_waits_for_calm_then_returns_to_the_baseline",
    ],
    "traffic-spike/scale-back": [
        "test_triage_pods::test_scale_back_waits_for_calm_then_returns_to_the_baseline",
    ],
    "service-down/service-down": [
        "test_triage_matrix::test_service_down_rolls_back_a_bad_release",
        "test_triage_matrix::test_service_down_restarts_when_nothing_was_deployed",
        "test_triage_matrix::test_service_down_decides_again_under_the_change_slot",
        "test_triage_matrix::test_service_down_escalates_when_nothing_helps",
        "test_triage_matrix::test_service_down_refuses_an_unknown_environment",
    ],
    "disk-full/disk-full": [
        "test_triage_disk::test_disk_full_clears_old_logs_by_policy_and_verifies",
        "test_triage_disk::test_disk_full_escalates_when_the_policy_may_delete_nothing",
        "test_triage_disk::test_disk_full_never_deletes_backups_retention_keeps",
        "test_triage_disk::test_disk_full_refuses_an_unknown_environment",
    ],
    "connection-pool-exhausted/connection-pool-exhausted": [
        "test_triage_restarts::test_pool_exhausted_records_evidence_then_restarts",
        "test_triage_restarts::test_restart_runbooks_refuse_an_unknown_environment",
    ],
    "memory-leak/memory-leak": [
        "test_triage_restarts::test_memory_leak_records_the_trend_then_restarts",
        "test_triage_restarts::test_restart_runbooks_refuse_an_unknown_environment",
    ],
    "game-day/game-day": [
        "test_game_day::test_a_crash_loop_game_day_is_detected_rolled_back_and_recorded",
        "test_game_day::test_production_needs_the_typed_confirmation",
        "test_game_day::test_an_unknown_fault_is_refused_naming_it",
        "test_game_day_triage::test_disk_pool_and_leak_faults_are_handled_by_their_runbooks",
    ],
    "database-slow/database-slow": [
        "test_triage_database::test_an_idle_transaction_past_the_policy_is_terminated",
        "test_triage_database::test_the_runbook_decides_again_under_the_change_slot",
        "test_triage_database::test_a_long_query_waits_for_approval_then_is_terminated",
        "test_triage_database::test_a_long_query_stays_when_the_approval_is_rejected",
        "test_triage_database::test_an_unanswered_approval_times_out_and_changes_nothing",
        "test_triage_database::test_a_superuser_blocker_is_refused_and_escalated",
        "test_triage_database::test_unknown_environment_or_database_changes_nothing",
    ],
    "handoff-note/handoff-note": [
        "test_shift_handoff::test_the_handoff_note_lists_the_shifts_failures_and_goes_to_the_next_engineer"
    ],
    "pre-shift-check/pre-shift-check": [
        "test_preshift_check::test_the_incoming_engineer_confirms_the_test_page_and_every_check_passes",
        "test_preshift_check::test_an_unanswered_page_and_a_dead_alertmanager_fail_naming_both",
    ],
    "record-crashed-run/record-crashed-run": [
        "test_data_matrix::test_a_crashed_run_gets_its_operation_log_entry"
    ],
}


def test_every_catalog_deployment_has_a_matrix_entry_and_nothing_else() -> None:
    catalog = set(catalog_names())
    assert not catalog - set(MATRIX), (
        f"catalog deployments without a served case: {catalog - set(MATRIX)}"
    )
    assert not set(MATRIX) - catalog, f"matrix entries not in the catalog: {set(MATRIX) - catalog}"


def test_every_matrix_case_exists_and_runs_on_both_paths() -> None:
    for name, cases in MATRIX.items():
        assert cases, name
        for case in cases:
            module_name, _, test_name = case.partition("::")
            module = importlib.import_module(f"tests.served.{module_name}")
            test = getattr(module, test_name, None)
            assert callable(test), f"{name}: no {case}"
            # Parametrized over both run paths through the runpath fixture.
            assert "runpath" in test.__code__.co_varnames[: test.__code__.co_argcount], case
