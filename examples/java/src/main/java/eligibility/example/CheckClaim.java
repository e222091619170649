// Send one hospital claim to the eligibility gateway and print its decisions.
//
//   cd examples/java && mvn -B -q package
//   java -jar target/check-claim.jar --address localhost:50051
//
// The claim names the sample data set's fixed practitioners (`make run` loads
// it; loader/sample.py) and is dated today in China Standard Time.
package eligibility.example;

import eligibility.gateway.v1.CheckClaimRequest;
import eligibility.gateway.v1.CheckClaimResponse;
import eligibility.gateway.v1.Channel;
import eligibility.gateway.v1.ClaimLine;
import eligibility.gateway.v1.EligibilityGatewayGrpc;
import eligibility.gateway.v1.LineDecision;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.StatusRuntimeException;
import java.time.LocalDate;
import java.time.ZoneId;
import java.util.concurrent.TimeUnit;

public final class CheckClaim {
  // The sample data set's fixed codes (loader/sample.py: SampleFixture).
  private static final String HOSPITAL = "H11010500001";
  private static final String ACTIVE_DOCTOR = "D110105000001";
  private static final String SUSPENDED_DOCTOR = "D110105000003";

  private CheckClaim() {}

  public static void main(String[] argv) throws InterruptedException {
    String address = "localhost:50051";
    String claimId = "EXAMPLE-JAVA-1";
    long deadlineMs = 5000; // hospital: 5 s, POS: 1 s
    for (int i = 0; i + 1 < argv.length; i += 2) {
      switch (argv[i]) {
        case "--address" -> address = argv[i + 1];
        case "--claim-id" -> claimId = argv[i + 1];
        case "--deadline-s" -> deadlineMs = (long) (Double.parseDouble(argv[i + 1]) * 1000);
        default -> throw new IllegalArgumentException("unknown argument " + argv[i]);
      }
    }
    LocalDate today = LocalDate.now(ZoneId.of("Asia/Shanghai"));
    int serviceDate = today.getYear() * 10000 + today.getMonthValue() * 100 + today.getDayOfMonth();
    CheckClaimRequest request =
        CheckClaimRequest.newBuilder()
            .setClaimId(claimId)
            .setInstitutionCode(HOSPITAL)
            .setChannel(Channel.CHANNEL_HOSPITAL)
            .setServiceDate(serviceDate)
            .addLines(line("1", ACTIVE_DOCTOR, false, 12800))
            .addLines(line("2", SUSPENDED_DOCTOR, false, 23000))
            .addLines(line("3", SUSPENDED_DOCTOR, true, 98000))
            .build();
    ManagedChannel channel =
        Grpc.newChannelBuilder(address, InsecureChannelCredentials.create()).build();
    try {
      CheckClaimResponse response =
          EligibilityGatewayGrpc.newBlockingStub(channel)
              .withDeadlineAfter(deadlineMs, TimeUnit.MILLISECONDS)
              .checkClaim(request);
      System.out.printf(
          "{\"claim_id\": \"%s\", \"service_date\": %d, \"index_version\": %s, \"rejected_lines\": %d}%n",
          response.getClaimId(),
          serviceDate,
          Long.toUnsignedString(response.getIndexVersion()),
          response.getRejectedLines());
      for (LineDecision line : response.getLinesList()) {
        String until = line.getStatusUntil() != 0 ? " until " + line.getStatusUntil() : "";
        System.out.printf(
            "line %s: %s %s %s%s%n",
            line.getLineId(), line.getDecision(), line.getReason(), line.getStatus(), until);
      }
    } catch (StatusRuntimeException e) {
      System.err.println(e.getStatus().getCode() + ": " + e.getStatus().getDescription());
      System.exit(1);
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  private static ClaimLine line(String id, String prescriber, boolean emergency, long amountFen) {
    return ClaimLine.newBuilder()
        .setLineId(id)
        .setPrescriberCode(prescriber)
        .setEmergency(emergency)
        .setAmountFen(amountFen)
        .build();
  }
}
