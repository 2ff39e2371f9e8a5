-- bk-job's own tables that `stepview cdc` reads, in their final shape at bk-job commit 588f99b
-- (TencentBlueKing/bk-job, "Merge pull request #4414", the newest at hand).
--
-- bk-job ships its schema as migration files (support-files/sql/job-manage/*.sql and
-- support-files/sql/job-execute/*.sql: CREATE TABLE IF NOT EXISTS, then ALTER TABLE in stored
-- procedures). This file is what SHOW CREATE TABLE prints after applying every one of those files in
-- file-name order to an empty MariaDB 10.11 -- so it is exactly the shape an up-to-date bk-job has:
--   job_manage.application               0001 (CREATE), 0025 V3.5.0.0 (bk_scope_type, bk_scope_id,
--                                        attrs, is_deleted, uk_scope_id_scope_type), 0035 V3.12.0
--                                        (tenant_id, `default`)
--   job_execute.task_instance            0001 (CREATE), index changes in 0002, 0011, 0015
--   job_execute.step_instance            0001 (CREATE), 0004 V3.0.6 (step_num, step_order), 0010,
--                                        0018 V3.6.0.0 (batch, rolling_config_id)
--   job_execute.gse_script_agent_task    0018 V3.6.0.0 (CREATE), 0019 (status default -1), 0020,
--   job_execute.gse_file_agent_task      0026 V3.11.2 (task_instance_id): results before 3.9
--   job_execute.gse_script_execute_obj_task  0024 V3.9.0 (CREATE), 0025 (idx_gse_task_id)
--   job_execute.gse_file_execute_obj_task    0024 V3.9.0 (CREATE), 0025 (idx_gse_task_id)
-- The AUTO_INCREMENT start values are bk-job's own (ids are large: 20000000000, 120000000000, ...).
-- Applied by `tests/cdc/bkjob.py setup`, which drops and creates both databases first.

SET NAMES utf8mb4;
CREATE DATABASE IF NOT EXISTS job_manage DEFAULT CHARACTER SET utf8mb4;
CREATE DATABASE IF NOT EXISTS job_execute DEFAULT CHARACTER SET utf8mb4;

USE job_manage;
CREATE TABLE `application` (
  `app_id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `row_create_time` datetime NOT NULL DEFAULT current_timestamp(),
  `row_update_time` datetime NOT NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),
  `app_name` varchar(1024) DEFAULT NULL,
  `maintainers` varchar(8192) DEFAULT NULL,
  `bk_supplier_account` varchar(128) DEFAULT NULL COMMENT '供应商账号，CMDB在多租户版本已废弃该字段',
  `app_type` tinyint(4) NOT NULL DEFAULT 1,
  `sub_app_ids` text DEFAULT NULL,
  `timezone` varchar(128) DEFAULT 'Asia/Shanghai',
  `bk_operate_dept_id` bigint(20) DEFAULT NULL,
  `language` varchar(20) DEFAULT NULL,
  `bk_scope_type` varchar(32) NOT NULL DEFAULT '',
  `bk_scope_id` varchar(32) NOT NULL DEFAULT '',
  `attrs` text DEFAULT NULL,
  `is_deleted` tinyint(1) unsigned NOT NULL DEFAULT 0,
  `tenant_id` varchar(32) NOT NULL DEFAULT 'default',
  `default` int(10) NOT NULL DEFAULT 0,
  PRIMARY KEY (`app_id`),
  UNIQUE KEY `uk_scope_id_scope_type` (`bk_scope_id`,`bk_scope_type`),
  KEY `idx_tenant_id` (`tenant_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

USE job_execute;
CREATE TABLE `task_instance` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `app_id` bigint(20) NOT NULL,
  `task_id` bigint(20) NOT NULL DEFAULT 0,
  `task_template_id` bigint(20) NOT NULL DEFAULT 0,
  `name` varchar(512) NOT NULL,
  `type` tinyint(4) NOT NULL,
  `operator` varchar(128) NOT NULL,
  `status` tinyint(4) NOT NULL DEFAULT 0,
  `current_step_id` bigint(20) NOT NULL DEFAULT 0,
  `startup_mode` tinyint(4) NOT NULL,
  `total_time` bigint(20) DEFAULT NULL,
  `callback_url` varchar(1024) DEFAULT NULL,
  `is_debug_task` tinyint(4) NOT NULL DEFAULT 0,
  `cron_task_id` bigint(20) NOT NULL DEFAULT 0,
  `create_time` bigint(20) DEFAULT NULL,
  `start_time` bigint(20) DEFAULT NULL,
  `end_time` bigint(20) DEFAULT NULL,
  `app_code` varchar(128) DEFAULT NULL,
  `row_create_time` datetime NOT NULL DEFAULT current_timestamp(),
  `row_update_time` datetime NOT NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),
  PRIMARY KEY (`id`),
  KEY `idx_app_create_time` (`app_id`,`create_time`),
  KEY `idx_operator_app_id_create_time` (`operator`,`app_id`,`create_time`),
  KEY `idx_app_id_status_create_time` (`app_id`,`status`,`create_time`),
  KEY `idx_app_id_task_id_create_time` (`app_id`,`task_id`,`create_time`),
  KEY `idx_app_id_cron_task_id_create_time` (`app_id`,`cron_task_id`,`create_time`),
  KEY `idx_create_time` (`create_time`)
) ENGINE=InnoDB AUTO_INCREMENT=20000000000 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

USE job_execute;
CREATE TABLE `step_instance` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `step_id` bigint(20) NOT NULL,
  `task_instance_id` bigint(20) NOT NULL,
  `app_id` bigint(20) NOT NULL,
  `name` varchar(512) DEFAULT NULL,
  `type` tinyint(4) NOT NULL,
  `operator` varchar(128) DEFAULT NULL,
  `status` tinyint(4) NOT NULL DEFAULT 1,
  `execute_count` int(11) NOT NULL DEFAULT 0,
  `batch` smallint(6) NOT NULL DEFAULT 0,
  `target_servers` longtext DEFAULT NULL,
  `abnormal_agent_ip_list` longtext DEFAULT NULL,
  `start_time` bigint(20) DEFAULT NULL,
  `end_time` bigint(20) DEFAULT NULL,
  `total_time` bigint(20) DEFAULT NULL,
  `total_ip_num` int(11) DEFAULT 0,
  `abnormal_agent_num` int(11) DEFAULT 0,
  `run_ip_num` int(11) DEFAULT 0,
  `fail_ip_num` int(11) DEFAULT 0,
  `success_ip_num` int(11) DEFAULT 0,
  `create_time` bigint(20) DEFAULT NULL,
  `ignore_error` tinyint(4) NOT NULL DEFAULT 0,
  `row_create_time` datetime NOT NULL DEFAULT current_timestamp(),
  `row_update_time` datetime NOT NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),
  `step_num` int(11) NOT NULL DEFAULT 1,
  `step_order` int(11) NOT NULL DEFAULT 1,
  `rolling_config_id` bigint(20) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `idx_task_instance_id` (`task_instance_id`),
  KEY `idx_app_id_create_time` (`app_id`,`create_time`)
) ENGINE=InnoDB AUTO_INCREMENT=20000000000 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

USE job_execute;
CREATE TABLE `gse_script_execute_obj_task` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `task_instance_id` bigint(20) NOT NULL,
  `step_instance_id` bigint(20) NOT NULL,
  `execute_count` smallint(6) NOT NULL DEFAULT 0,
  `actual_execute_count` smallint(6) DEFAULT NULL,
  `batch` smallint(6) NOT NULL DEFAULT 0,
  `execute_obj_type` tinyint(4) NOT NULL,
  `execute_obj_id` varchar(24) NOT NULL,
  `gse_task_id` bigint(20) NOT NULL DEFAULT 0,
  `status` int(11) DEFAULT 1,
  `start_time` bigint(20) DEFAULT NULL,
  `end_time` bigint(20) DEFAULT NULL,
  `total_time` bigint(20) DEFAULT NULL,
  `error_code` int(11) DEFAULT 0,
  `exit_code` int(11) DEFAULT NULL,
  `tag` varchar(256) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT '',
  `log_offset` int(11) NOT NULL DEFAULT 0,
  `row_create_time` datetime NOT NULL DEFAULT current_timestamp(),
  `row_update_time` datetime NOT NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),
  PRIMARY KEY (`id`),
  UNIQUE KEY `uk_step_id_execute_count_batch_execute_obj_id` (`step_instance_id`,`execute_count`,`batch`,`execute_obj_id`),
  KEY `idx_task_instance_id` (`task_instance_id`),
  KEY `idx_step_id_execute_obj_id` (`step_instance_id`,`execute_obj_id`),
  KEY `idx_gse_task_id` (`gse_task_id`)
) ENGINE=InnoDB AUTO_INCREMENT=120000000000 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

USE job_execute;
CREATE TABLE `gse_file_execute_obj_task` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `task_instance_id` bigint(20) NOT NULL,
  `step_instance_id` bigint(20) NOT NULL,
  `execute_count` smallint(6) NOT NULL DEFAULT 0,
  `actual_execute_count` smallint(6) DEFAULT NULL,
  `batch` smallint(6) NOT NULL DEFAULT 0,
  `execute_obj_type` tinyint(4) NOT NULL,
  `execute_obj_id` varchar(24) NOT NULL,
  `mode` tinyint(1) NOT NULL,
  `gse_task_id` bigint(20) NOT NULL DEFAULT 0,
  `status` int(11) DEFAULT 1,
  `start_time` bigint(20) DEFAULT NULL,
  `end_time` bigint(20) DEFAULT NULL,
  `total_time` bigint(20) DEFAULT NULL,
  `error_code` int(11) DEFAULT 0,
  `row_create_time` datetime NOT NULL DEFAULT current_timestamp(),
  `row_update_time` datetime NOT NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),
  PRIMARY KEY (`id`),
  UNIQUE KEY `uk_step_id_execute_count_batch_mode_execute_obj_id` (`step_instance_id`,`execute_count`,`batch`,`mode`,`execute_obj_id`),
  KEY `idx_task_instance_id` (`task_instance_id`),
  KEY `idx_step_id_execute_obj_id` (`step_instance_id`,`execute_obj_id`),
  KEY `idx_gse_task_id` (`gse_task_id`)
) ENGINE=InnoDB AUTO_INCREMENT=120000000000 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

USE job_execute;
CREATE TABLE `gse_script_agent_task` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `step_instance_id` bigint(20) NOT NULL,
  `execute_count` smallint(6) NOT NULL DEFAULT 0,
  `actual_execute_count` smallint(6) DEFAULT NULL,
  `batch` smallint(6) NOT NULL DEFAULT 0,
  `host_id` bigint(20) NOT NULL DEFAULT 0,
  `agent_id` varchar(64) NOT NULL DEFAULT '',
  `gse_task_id` bigint(20) NOT NULL DEFAULT 0,
  `status` int(11) NOT NULL DEFAULT -1,
  `start_time` bigint(20) DEFAULT NULL,
  `end_time` bigint(20) DEFAULT NULL,
  `total_time` bigint(20) DEFAULT NULL,
  `error_code` int(11) DEFAULT 0,
  `exit_code` int(11) DEFAULT NULL,
  `tag` varchar(256) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT '',
  `log_offset` int(11) NOT NULL DEFAULT 0,
  `row_create_time` datetime NOT NULL DEFAULT current_timestamp(),
  `row_update_time` datetime NOT NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),
  `task_instance_id` bigint(20) NOT NULL DEFAULT 0,
  PRIMARY KEY (`id`),
  UNIQUE KEY `uk_step_id_execute_count_batch_host_id` (`step_instance_id`,`execute_count`,`batch`,`host_id`),
  KEY `idx_step_id_host_id` (`step_instance_id`,`host_id`),
  KEY `idx_step_id_agent_id` (`step_instance_id`,`agent_id`),
  KEY `idx_gse_task_id` (`gse_task_id`),
  KEY `idx_task_instance_id` (`task_instance_id`)
) ENGINE=InnoDB AUTO_INCREMENT=30000000000 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

USE job_execute;
CREATE TABLE `gse_file_agent_task` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `step_instance_id` bigint(20) NOT NULL,
  `execute_count` smallint(6) NOT NULL DEFAULT 0,
  `actual_execute_count` smallint(6) DEFAULT NULL,
  `batch` smallint(6) NOT NULL DEFAULT 0,
  `host_id` bigint(20) NOT NULL DEFAULT 0,
  `agent_id` varchar(64) NOT NULL DEFAULT '',
  `mode` tinyint(1) NOT NULL,
  `gse_task_id` bigint(20) NOT NULL DEFAULT 0,
  `status` int(11) NOT NULL DEFAULT -1,
  `start_time` bigint(20) DEFAULT NULL,
  `end_time` bigint(20) DEFAULT NULL,
  `total_time` bigint(20) DEFAULT NULL,
  `error_code` int(11) DEFAULT 0,
  `row_create_time` datetime NOT NULL DEFAULT current_timestamp(),
  `row_update_time` datetime NOT NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),
  `task_instance_id` bigint(20) NOT NULL DEFAULT 0,
  PRIMARY KEY (`id`),
  UNIQUE KEY `uk_step_id_execute_count_batch_mode_host_id` (`step_instance_id`,`execute_count`,`batch`,`mode`,`host_id`),
  KEY `idx_step_id_host_id` (`step_instance_id`,`host_id`),
  KEY `idx_step_id_agent_id` (`step_instance_id`,`agent_id`),
  KEY `idx_gse_task_id` (`gse_task_id`),
  KEY `idx_task_instance_id` (`task_instance_id`)
) ENGINE=InnoDB AUTO_INCREMENT=30000000000 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
