"""A client of stepview built the way a BlueKing SaaS builds one, with bkapi-client-core (PyPI):
an APIGatewayClient with an operation group, the app's credentials set once. Prints each
operation's parsed answer as a line of JSON.

    python3 bkapi_client.py ENDPOINT APP_CODE APP_SECRET STEP_QUERY_JSON BATCH_BODY_JSON
"""
import json
import sys

from bkapi_client_core.apigateway import APIGatewayClient, Operation, OperationGroup, bind_property


class Group(OperationGroup):
    get_step_instance_status = bind_property(
        Operation, name="get_step_instance_status", method="GET", path="/api/v3/get_step_instance_status"
    )
    batch_get_job_instance_ip_log = bind_property(
        Operation,
        name="batch_get_job_instance_ip_log",
        method="POST",
        path="/api/v3/batch_get_job_instance_ip_log",
    )


class Client(APIGatewayClient):
    _api_name = "bk-job"
    api = bind_property(Group, name="api")


def main():
    endpoint, app, secret, step_query, batch_body = sys.argv[1:6]
    client = Client(endpoint=endpoint, stage="")
    client.update_bkapi_authorization(bk_app_code=app, bk_app_secret=secret, bk_username="admin")
    print(json.dumps(client.api.get_step_instance_status(params=json.loads(step_query))))
    print(json.dumps(client.api.batch_get_job_instance_ip_log(data=json.loads(batch_body))))


if __name__ == "__main__":
    main()
